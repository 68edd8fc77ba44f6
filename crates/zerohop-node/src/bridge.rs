//! `BridgeHandle`: a [`zerohop::Bridge`] for JavaScript (see `bridge.ts`).

use std::time::Duration;

use napi::bindgen_prelude::*;
use napi_derive::napi;
use zerohop::{Bridge, Direction};

use crate::{closed, duration_ms, js_error};

/// One direction's counters.
#[napi(object)]
pub struct BridgeDirectionMetrics {
    pub forwarded: f64,
    pub forwarded_bytes: f64,
    /// Messages the destination had no room for (its `backpressure`), dropped.
    pub dropped: f64,
}

/// A bridge's counters, each way.
#[napi(object)]
pub struct BridgeMetrics {
    /// Local to remote.
    pub out: BridgeDirectionMetrics,
    /// Remote to local.
    pub r#in: BridgeDirectionMetrics,
}

/// A running bridge.
#[napi]
pub struct BridgeHandle {
    bridge: Option<Bridge>,
}

/// Opens both sides of a bridge and starts it, off the JavaScript thread (it waits for a
/// `nats://` side's first connection); resolves with the running bridge.
#[napi(
    ts_args_type = "local: string, localOptions: object | undefined, remote: string, remoteOptions: object | undefined, direction: string, origin?: string",
    ts_return_type = "Promise<BridgeHandle>"
)]
pub fn start_bridge(
    env: Env,
    local: String,
    local_options: Unknown,
    remote: String,
    remote_options: Unknown,
    direction: String,
    origin: Option<String>,
) -> Result<AsyncTask<StartTask>> {
    // SAFETY: both are arguments of this call, on its env.
    let (local_options, remote_options) = unsafe {
        (
            crate::options::from_js(env.raw(), local_options.raw()).map_err(js_error)?,
            crate::options::from_js(env.raw(), remote_options.raw()).map_err(js_error)?,
        )
    };
    let direction = match direction.as_str() {
        "out" => Direction::Out,
        "in" => Direction::In,
        "both" => Direction::Both,
        d => return Err(js_error(zerohop::Error::bad_option(format!("direction '{d}': 'out', 'in' or 'both'")))),
    };
    Ok(AsyncTask::new(StartTask { args: Some((local, local_options, remote, remote_options, direction, origin)) }))
}

type StartArgs = (String, zerohop::Options, String, zerohop::Options, Direction, Option<String>);

/// Starts a bridge (see [`start_bridge`]).
pub struct StartTask {
    args: Option<StartArgs>,
}

impl Task for StartTask {
    type Output = Bridge;
    type JsValue = BridgeHandle;

    fn compute(&mut self) -> Result<Bridge> {
        let (local, a, remote, b, direction, origin) = self.args.take().ok_or_else(closed)?;
        Bridge::start(&local, a, &remote, b, direction, origin).map_err(js_error)
    }

    fn resolve(&mut self, _env: Env, bridge: Bridge) -> Result<BridgeHandle> {
        Ok(BridgeHandle { bridge: Some(bridge) })
    }
}

#[napi]
impl BridgeHandle {
    #[napi]
    pub fn metrics(&self) -> Result<BridgeMetrics> {
        Ok(js_metrics(self.bridge.as_ref().ok_or_else(closed)?.metrics()))
    }

    /// Stops forwarding, giving what was forwarded up to `linger_ms` to go (off the
    /// JavaScript thread); resolves with the final counts (none if it was closed before).
    #[napi(ts_return_type = "Promise<BridgeMetrics | undefined>")]
    pub fn close(&mut self, linger_ms: f64) -> AsyncTask<CloseTask> {
        let linger = if linger_ms > 0.0 { duration_ms(linger_ms) } else { Duration::ZERO };
        AsyncTask::new(CloseTask { bridge: self.bridge.take(), linger })
    }
}

/// Closes a bridge (its threads joined, what it forwarded lingered over).
pub struct CloseTask {
    bridge: Option<Bridge>,
    linger: Duration,
}

impl Task for CloseTask {
    type Output = Option<zerohop::BridgeMetrics>;
    type JsValue = Option<BridgeMetrics>;

    fn compute(&mut self) -> Result<Option<zerohop::BridgeMetrics>> {
        Ok(self.bridge.take().map(|mut b| {
            b.close(self.linger);
            b.metrics()
        }))
    }

    fn resolve(&mut self, _env: Env, output: Option<zerohop::BridgeMetrics>) -> Result<Option<BridgeMetrics>> {
        Ok(output.map(js_metrics))
    }
}

fn js_metrics(m: zerohop::BridgeMetrics) -> BridgeMetrics {
    let of = |d: zerohop::DirectionMetrics| BridgeDirectionMetrics {
        forwarded: d.forwarded as f64,
        forwarded_bytes: d.forwarded_bytes as f64,
        dropped: d.dropped as f64,
    };
    BridgeMetrics { out: of(m.out), r#in: of(m.r#in) }
}
