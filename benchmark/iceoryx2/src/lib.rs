//! See benches/versus.rs.
