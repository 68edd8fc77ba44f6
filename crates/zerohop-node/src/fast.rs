//! The per-message calls of network hubs as plain Node-API functions.
//!
//! `publish(bytes, channel)`, `publishStaged(len, channel)` and `pump()` run once per
//! message and once per poll of an empty ring, for every network transport;
//! `netArm(waker, cursor)` once per wait. A `#[napi]` function pays for napi-rs's borrow
//! tracking on every call (a thread-local scope, a global map, allocations), which
//! costs more than the work itself. These are written against Node-API directly: they
//! read their arguments, call the hub's [`Link`], and allocate nothing.
//!
//! The three per-message calls are made for each hub by `netBind(link)`, bound to its
//! link (the function's data): a call finds its link without an argument to check.
//! Checking an external's type tag and reading it cost about 30 ns a call, twice per
//! message and once per poll.
//!
//! Reading a `Uint8Array` argument's bytes (`napi_get_typedarray_info`) costs more than
//! sending a small message, and a small array that V8 keeps on its heap is moved off it
//! first. So a link comes with a [`Stage`]: memory of ours that JavaScript sees as an
//! `ArrayBuffer` (`stage`), copies a small message into, and names by its length only
//! (`publishStaged`).
//!
//! A link or a waker travels as an external tagged with [`TAG`](Held::TAG), so that any
//! other value passed in is refused with a `TypeError` rather than dereferenced.

use std::cell::UnsafeCell;
use std::ffi::{CString, c_void};
use std::ptr;
use std::rc::Rc;
use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi::{JsValue, sys};
use napi_derive::napi;
use zerohop::{Delivery, Link};

use crate::net::Waker;

/// What an external of this module holds, and the tag that marks it (Node-API type tags
/// are 128-bit values), so that anything else passed in is refused, not dereferenced.
pub trait Held: 'static {
    const TAG: sys::napi_type_tag;
    const NOT_ONE: &'static str;
}

/// How many bytes a [`Stage`] holds: messages up to this size are staged. Up to
/// about 1 KiB the copy in JavaScript costs less than reading a `Uint8Array`
/// argument; past it the copy costs more than it saves (one-way over `tcp://`
/// 2026-12-05: 512 B 14-17 % faster staged, 1 KiB even, 2 KiB 2-11 % and 4 KiB 8-10 %
/// faster unstaged).
pub const STAGE_BYTES: usize = 1024;

/// Memory JavaScript copies a message into before `publishStaged` sends it. Shared
/// by the link and the `ArrayBuffer` over it, so it lives while either does; both live
/// on the JavaScript thread only (hence `Rc`).
pub struct Stage(Box<[UnsafeCell<u8>]>);

impl Stage {
    fn new() -> Stage {
        Stage((0..STAGE_BYTES).map(|_| UnsafeCell::new(0)).collect())
    }

    fn ptr(&self) -> *mut u8 {
        UnsafeCell::raw_get(self.0.as_ptr())
    }
}

/// A hub's link and its stage: what `netBind` binds the per-message calls to.
#[derive(Clone)]
pub struct Sender {
    link: Arc<dyn Link>,
    stage: Rc<Stage>,
}

impl Held for Sender {
    const TAG: sys::napi_type_tag = sys::napi_type_tag { lower: 0x7a65_726f_686f_7075, upper: 0x6e65_746c_696e_6b03 };
    const NOT_ONE: &'static str = "the first argument is not a hub's link";
}

impl Held for Rc<Waker> {
    const TAG: sys::napi_type_tag = sys::napi_type_tag { lower: 0x7a65_726f_686f_7075, upper: 0x7761_6b65_7200_0001 };
    const NOT_ONE: &'static str = "the first argument is not a hub's waker";
}

/// Drops the `Box<T>` that `data` is (a finalizer: Node calls it once, on the thread
/// of the env, so a JavaScript-thread-only value is dropped there).
unsafe extern "C" fn drop_box<T>(_env: sys::napi_env, data: *mut c_void, _hint: *mut c_void) {
    // SAFETY: every caller hands Node a pointer from `Box::<T>::into_raw` with this.
    drop(unsafe { Box::from_raw(data.cast::<T>()) });
}

/// Wraps `held` in a tagged external that drops it when collected.
fn external<H: Held>(env: &Env, held: H) -> Result<sys::napi_value> {
    let data = Box::into_raw(Box::new(held)).cast::<c_void>();
    let mut value = ptr::null_mut();
    // SAFETY: a valid env on the JS thread; `data` stays alive until `finalize` runs.
    let status =
        unsafe { sys::napi_create_external(env.raw(), data, Some(drop_box::<H>), ptr::null_mut(), &mut value) };
    if status != sys::Status::napi_ok {
        // SAFETY: not handed to Node, so still ours to free.
        drop(unsafe { Box::from_raw(data.cast::<H>()) });
        return Err(Error::new(Status::GenericFailure, "cannot create the external"));
    }
    // SAFETY: `value` is the external just created.
    check_status!(unsafe { sys::napi_type_tag_object(env.raw(), value, &H::TAG) })?;
    Ok(value)
}

/// A hub's link (with a stage of its own) as a tagged external.
pub fn link_external(env: &Env, link: Arc<dyn Link>) -> Result<sys::napi_value> {
    external(env, Sender { link, stage: Rc::new(Stage::new()) })
}

/// A hub's waker as a tagged external.
pub fn waker_external(env: &Env, waker: Rc<Waker>) -> Result<sys::napi_value> {
    external(env, waker)
}

/// Throws `message` as a JavaScript error (or a `TypeError`), returning `undefined`.
///
/// # Safety
/// `env` must be the env of the current call.
unsafe fn throw(env: sys::napi_env, message: &str, type_error: bool) -> sys::napi_value {
    let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
    // SAFETY: per the contract; `text` is NUL-terminated and outlives the call.
    unsafe {
        if type_error {
            sys::napi_throw_type_error(env, ptr::null(), text.as_ptr());
        } else {
            sys::napi_throw_error(env, ptr::null(), text.as_ptr());
        }
    }
    ptr::null_mut()
}

/// Reads `N` arguments; the first must be an external holding an `H`.
///
/// # Safety
/// `env` and `info` must be those of the current call. The returned reference lives
/// while the external does, which the caller's arguments keep alive for the call.
unsafe fn args<'a, H: Held, const N: usize>(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> std::result::Result<(&'a H, [sys::napi_value; N]), &'static str> {
    let mut argv = [ptr::null_mut(); N];
    let mut argc = N;
    // SAFETY: per the contract; `argv` has room for `argc` values.
    let s = unsafe { sys::napi_get_cb_info(env, info, &mut argc, argv.as_mut_ptr(), ptr::null_mut(), ptr::null_mut()) };
    if s != sys::Status::napi_ok || argc < N {
        return Err("expected a link and its arguments");
    }
    let mut ours = false;
    // SAFETY: argv[0] is a value of this call.
    let s = unsafe { sys::napi_check_object_type_tag(env, argv[0], &H::TAG, &mut ours) };
    if s != sys::Status::napi_ok || !ours {
        return Err(H::NOT_ONE);
    }
    let mut data = ptr::null_mut();
    // SAFETY: tagged by `external::<H>`, so it is an external holding a Box<H>.
    if unsafe { sys::napi_get_value_external(env, argv[0], &mut data) } != sys::Status::napi_ok || data.is_null() {
        return Err(H::NOT_ONE);
    }
    // SAFETY: the external owns the value until its finalizer runs, which cannot happen
    // while this call holds the external as an argument.
    Ok((unsafe { &*data.cast::<H>() }, argv))
}

/// The bytes of a `Uint8Array` argument.
///
/// # Safety
/// `env` must be the env of the current call and `value` one of its arguments. The
/// slice lives as long as the argument, so only for this call, during which the callers
/// below copy it and run no JavaScript.
unsafe fn bytes_of<'a>(env: sys::napi_env, value: sys::napi_value) -> Option<&'a [u8]> {
    let (mut kind, mut len, mut data) = (0, 0usize, ptr::null_mut());
    // SAFETY: per the contract; the out-pointers are valid.
    let s = unsafe {
        sys::napi_get_typedarray_info(env, value, &mut kind, &mut len, &mut data, ptr::null_mut(), ptr::null_mut())
    };
    if s != sys::Status::napi_ok || kind != sys::TypedarrayType::uint8_array {
        return None;
    }
    if len == 0 || data.is_null() {
        return Some(&[]);
    }
    // SAFETY: Node reports `len` bytes at `data`, kept alive by the argument.
    Some(unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) })
}

/// The sender a bound function was made for, and its `N` arguments.
///
/// # Safety
/// `env` and `info` must be those of the current call of a function made by
/// [`bound`]: its data is a live `Sender` until the function is collected, which cannot
/// happen during its call.
unsafe fn bound_args<'a, const N: usize>(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> std::result::Result<(&'a Sender, [sys::napi_value; N]), &'static str> {
    // SAFETY: per the contract.
    let (sender, argv, argc) = unsafe { bound_args_up_to::<N>(env, info) }?;
    if argc < N {
        return Err("missing arguments");
    }
    Ok((sender, argv))
}

/// [`bound_args`] for a function whose last arguments may be left out: how many were
/// given (those left out are `undefined`).
///
/// # Safety
/// As for [`bound_args`].
unsafe fn bound_args_up_to<'a, const N: usize>(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> std::result::Result<(&'a Sender, [sys::napi_value; N], usize), &'static str> {
    let mut argv = [ptr::null_mut(); N];
    let mut argc = N;
    let mut data = ptr::null_mut();
    // SAFETY: per the contract; `argv` has room for `argc` values.
    let s = unsafe { sys::napi_get_cb_info(env, info, &mut argc, argv.as_mut_ptr(), ptr::null_mut(), &mut data) };
    if s != sys::Status::napi_ok || data.is_null() {
        return Err("missing arguments");
    }
    // SAFETY: per the contract.
    Ok((unsafe { &*data.cast::<Sender>() }, argv, argc))
}

/// `publish(bytes: Uint8Array, channel: number, now?: true): boolean` — false if some
/// receiver did not get it (`drop_new`, or a datagram with nowhere to go). With `now`,
/// what is batched goes out at once, this message with it (a flush).
unsafe extern "C" fn bound_publish(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    // SAFETY: called by Node with this call's env and info, for a function of `bound`.
    let (sender, argv, now) = match unsafe { publish_args(env, info) } {
        Ok(v) => v,
        // SAFETY: this call's env.
        Err(why) => return unsafe { throw(env, why, true) },
    };
    // SAFETY: this call's env and argument.
    let Some(bytes) = (unsafe { bytes_of(env, argv[0]) }) else {
        // SAFETY: this call's env.
        return unsafe { throw(env, "publish takes a Uint8Array", true) };
    };
    // SAFETY: this call's env and argument.
    unsafe { publish(env, sender, bytes, argv[1], now, None) }
}

/// `publishStaged(len: number, channel: number, now?: true): boolean` — `publish` of
/// the first `len` bytes of the link's stage.
unsafe extern "C" fn bound_publish_staged(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    // SAFETY: called by Node with this call's env and info, for a function of `bound`.
    let (sender, argv, now) = match unsafe { publish_args(env, info) } {
        Ok(v) => v,
        // SAFETY: this call's env.
        Err(why) => return unsafe { throw(env, why, true) },
    };
    // SAFETY: this call's env and argument.
    let bytes = match unsafe { staged(env, sender, argv[0]) } {
        Ok(bytes) => bytes,
        // SAFETY: this call's env.
        Err(why) => return unsafe { throw(env, why, true) },
    };
    // SAFETY: this call's env and argument.
    unsafe { publish(env, sender, bytes, argv[1], now, None) }
}

/// `publishStagedExpiring(len: number, channel: number, expiresAtMs: number): boolean`
/// — `publishStaged` of a message with a time to live (`ttlMs`): it expires at
/// `expiresAtMs`, ms since the Unix epoch.
unsafe extern "C" fn bound_publish_staged_expiring(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    // SAFETY: called by Node with this call's env and info, for a function of `bound`.
    let (sender, argv) = match unsafe { bound_args::<3>(env, info) } {
        Ok(v) => v,
        // SAFETY: this call's env.
        Err(why) => return unsafe { throw(env, why, true) },
    };
    // SAFETY: this call's env and argument.
    let bytes = match unsafe { staged(env, sender, argv[0]) } {
        Ok(bytes) => bytes,
        // SAFETY: this call's env.
        Err(why) => return unsafe { throw(env, why, true) },
    };
    let mut at_ms = 0f64;
    // SAFETY: this call's env and argument; `at_ms` is a valid out-pointer.
    let s = unsafe { sys::napi_get_value_double(env, argv[2], &mut at_ms) };
    if s != sys::Status::napi_ok || !(1.0..1e15).contains(&at_ms) {
        // SAFETY: this call's env.
        return unsafe { throw(env, "publishStagedExpiring takes a time in ms since the Unix epoch", true) };
    }
    // SAFETY: this call's env and argument.
    unsafe { publish(env, sender, bytes, argv[1], None, Some((at_ms * 1e6) as u64)) }
}

/// The first `len` bytes of the link's stage, `len` being the argument `len`.
///
/// # Safety
/// `env` must be the env of the current call and `len` its argument.
unsafe fn staged(
    env: sys::napi_env,
    sender: &Sender,
    len: sys::napi_value,
) -> std::result::Result<&[u8], &'static str> {
    let mut n = 0u32;
    // SAFETY: per the contract; `n` is a valid out-pointer.
    let s = unsafe { sys::napi_get_value_uint32(env, len, &mut n) };
    let n = n as usize;
    if s != sys::Status::napi_ok || n > STAGE_BYTES {
        return Err("publishStaged takes a length within the stage");
    }
    // SAFETY: the stage holds STAGE_BYTES initialised bytes and lives as long as the
    // sender. JavaScript, its only other user, writes it only while no call of ours
    // runs, and nothing after this runs JavaScript before the bytes are used, so nobody
    // writes it while they are read.
    Ok(unsafe { std::slice::from_raw_parts(sender.stage.ptr().cast_const(), n) })
}

/// The arguments of `publish` and `publishStaged`: two, and `now` if it was given (it
/// is only when true, so that the common call converts no third argument).
///
/// # Safety
/// As for [`bound_args`].
unsafe fn publish_args<'a>(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> std::result::Result<(&'a Sender, [sys::napi_value; 2], Option<sys::napi_value>), &'static str> {
    // SAFETY: per the contract.
    let (sender, argv, argc) = unsafe { bound_args_up_to::<3>(env, info) }?;
    if argc < 2 {
        return Err("missing arguments");
    }
    Ok((sender, [argv[0], argv[1]], (argc > 2).then_some(argv[2])))
}

/// Publishes `bytes` on the channel `channel` names (with its expiry, if it has one),
/// and flushes if `now` is `true`; the shared end of the publishing calls.
///
/// # Safety
/// `env` must be the env of the current call, and `channel` and `now` its arguments.
unsafe fn publish(
    env: sys::napi_env,
    sender: &Sender,
    bytes: &[u8],
    channel: sys::napi_value,
    now: Option<sys::napi_value>,
    expiry_ns: Option<u64>,
) -> sys::napi_value {
    let mut number = 0u32;
    // SAFETY: per the contract; `number` is a valid out-pointer.
    let s = unsafe { sys::napi_get_value_uint32(env, channel, &mut number) };
    let Some(channel) = u16::try_from(number).ok().filter(|_| s == sys::Status::napi_ok) else {
        // SAFETY: per the contract.
        return unsafe { throw(env, "publish takes a channel number below 65536", true) };
    };
    let mut now_flag = false;
    if let Some(now) = now {
        // SAFETY: per the contract; `now_flag` is a valid out-pointer. Anything but a
        // boolean leaves it false.
        unsafe { sys::napi_get_value_bool(env, now, &mut now_flag) };
    }
    let published = match expiry_ns {
        None => sender.link.publish(channel, bytes),
        Some(e) => sender.link.publish_expiring(channel, bytes, e),
    };
    if now_flag && published.is_ok() {
        // Only a closing hub fails to flush, and its close sends what is queued.
        let _ = sender.link.flush();
    }
    match published {
        Ok(delivery) => {
            let mut out = ptr::null_mut();
            // SAFETY: per the contract; `out` is a valid out-pointer.
            unsafe { sys::napi_get_boolean(env, delivery == Delivery::Accepted, &mut out) };
            out
        }
        // SAFETY: per the contract.
        Err(e) => unsafe { throw(env, &e.to_string(), false) },
    }
}

/// `pump(): number` — datagrams read (their messages went into the ring).
unsafe extern "C" fn bound_pump(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    // SAFETY: called by Node with this call's env and info, for a function of `bound`.
    let (sender, []) = match unsafe { bound_args::<0>(env, info) } {
        Ok(v) => v,
        // SAFETY: this call's env.
        Err(why) => return unsafe { throw(env, why, true) },
    };
    match sender.link.pump() {
        // SAFETY: this call's env.
        Ok(n) => unsafe { uint32(env, n) },
        // SAFETY: this call's env.
        Err(e) => unsafe { throw(env, &e.to_string(), false) },
    }
}

/// A function named `name` that runs `callback` with its own clone of `sender` as its
/// data (dropped when the function is collected); `None` if Node-API refused.
///
/// # Safety
/// `env` must be the env of the current call.
unsafe fn bound(
    env: sys::napi_env,
    name: &std::ffi::CStr,
    callback: sys::napi_callback,
    sender: &Sender,
) -> Option<sys::napi_value> {
    let data = Box::into_raw(Box::new(sender.clone())).cast::<c_void>();
    let mut f = ptr::null_mut();
    // SAFETY: per the contract; `name` is NUL-terminated; `data` lives until the
    // finalizer added below drops it.
    let s = unsafe {
        sys::napi_create_function(env, name.as_ptr(), name.to_bytes().len() as isize, callback, data, &mut f)
    };
    if s != sys::Status::napi_ok {
        // SAFETY: not handed to Node, so still ours to free.
        drop(unsafe { Box::from_raw(data.cast::<Sender>()) });
        return None;
    }
    // SAFETY: `f` is the function just made; the finalizer frees `data` once `f` is
    // collected, when nothing can call it any more.
    let s =
        unsafe { sys::napi_add_finalizer(env, f, data, Some(drop_box::<Sender>), ptr::null_mut(), ptr::null_mut()) };
    // Without a finalizer the function may still be called: its data is left alive.
    (s == sys::Status::napi_ok).then_some(f)
}

/// The stage of `sender` as an `ArrayBuffer`, or `undefined` where Node-API may not wrap
/// memory of ours (a V8 sandbox): then every message goes through `publish`.
///
/// # Safety
/// `env` must be the env of the current call.
unsafe fn stage_buffer(env: sys::napi_env, sender: &Sender) -> sys::napi_value {
    let hint = Box::into_raw(Box::new(sender.stage.clone()));
    let mut out = ptr::null_mut();
    // SAFETY: per the contract; the memory stays valid until the finalizer drops the
    // `Rc` it is given (or, if the call fails, the one dropped here).
    let s = unsafe {
        sys::napi_create_external_arraybuffer(
            env,
            sender.stage.ptr().cast(),
            STAGE_BYTES,
            Some(drop_hint::<Rc<Stage>>),
            hint.cast(),
            &mut out,
        )
    };
    if s != sys::Status::napi_ok {
        // SAFETY: not handed to Node, so still ours to free.
        drop(unsafe { Box::from_raw(hint) });
        // SAFETY: per the contract; `out` is a valid out-pointer.
        unsafe { sys::napi_get_undefined(env, &mut out) };
    }
    out
}

/// Drops the `Box<T>` that `hint` is (a finalizer, like [`drop_box`], for Node-API
/// calls that pass the data elsewhere).
unsafe extern "C" fn drop_hint<T>(_env: sys::napi_env, _data: *mut c_void, hint: *mut c_void) {
    // SAFETY: every caller hands Node a pointer from `Box::<T>::into_raw` with this.
    drop(unsafe { Box::from_raw(hint.cast::<T>()) });
}

/// `netBind(link): { publish, publishStaged, publishStagedExpiring, pump, stage }` — the link's per-message
/// calls, bound to it, and its stage (see the module docs).
unsafe extern "C" fn net_bind(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    // SAFETY: called by Node with this call's env and info.
    let (sender, _) = match unsafe { args::<Sender, 1>(env, info) } {
        Ok(v) => v,
        // SAFETY: this call's env.
        Err(why) => return unsafe { throw(env, why, true) },
    };
    let mut calls = ptr::null_mut();
    // SAFETY: this call's env; `calls` is a valid out-pointer.
    if unsafe { sys::napi_create_object(env, &mut calls) } != sys::Status::napi_ok {
        // SAFETY: this call's env.
        return unsafe { throw(env, "cannot bind the link", false) };
    }
    let functions: [(&std::ffi::CStr, sys::napi_callback); 4] = [
        (c"publish", Some(bound_publish)),
        (c"publishStaged", Some(bound_publish_staged)),
        (c"publishStagedExpiring", Some(bound_publish_staged_expiring)),
        (c"pump", Some(bound_pump)),
    ];
    for (name, callback) in functions {
        // SAFETY: this call's env.
        let Some(f) = (unsafe { bound(env, name, callback, sender) }) else {
            // SAFETY: this call's env.
            return unsafe { throw(env, "cannot bind the link", false) };
        };
        // SAFETY: this call's env; `calls` and `f` were made in it.
        unsafe { sys::napi_set_named_property(env, calls, name.as_ptr(), f) };
    }
    // SAFETY: this call's env.
    let stage = unsafe { stage_buffer(env, sender) };
    // SAFETY: this call's env; `calls` and `stage` were made in it.
    unsafe { sys::napi_set_named_property(env, calls, c"stage".as_ptr(), stage) };
    calls
}

/// `netArm(waker, cursor: number): void` — rings the hub's doorbell once its ring holds
/// messages past `cursor`.
unsafe extern "C" fn net_arm(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    // SAFETY: called by Node with this call's env and info.
    let (waker, argv) = match unsafe { args::<Rc<Waker>, 2>(env, info) } {
        Ok(v) => v,
        // SAFETY: this call's env.
        Err(why) => return unsafe { throw(env, why, true) },
    };
    let mut cursor = 0.0f64;
    // SAFETY: this call's env and argument; `cursor` is a valid out-pointer.
    if unsafe { sys::napi_get_value_double(env, argv[1], &mut cursor) } != sys::Status::napi_ok {
        // SAFETY: this call's env.
        return unsafe { throw(env, "netArm takes a cursor number", true) };
    }
    if !waker.arm(crate::seq_from_js(cursor)) {
        // SAFETY: this call's env.
        return unsafe { throw(env, "ERR_CLOSED: the hub is closed", false) };
    }
    ptr::null_mut()
}

/// `n` as a JavaScript number.
///
/// # Safety
/// `env` must be the env of the current call.
unsafe fn uint32(env: sys::napi_env, n: usize) -> sys::napi_value {
    let mut out = ptr::null_mut();
    // SAFETY: per the contract; `out` is a valid out-pointer.
    unsafe { sys::napi_create_uint32(env, n.min(u32::MAX as usize) as u32, &mut out) };
    out
}

/// Adds the fast paths to the addon's exports.
#[napi(module_exports)]
pub fn register_fast_paths(exports: Object, env: Env) -> Result<()> {
    let functions: [(&std::ffi::CStr, sys::napi_callback); 2] =
        [(c"netBind", Some(net_bind)), (c"netArm", Some(net_arm))];
    for (name, callback) in functions {
        let mut f = ptr::null_mut();
        // SAFETY: a valid env during module initialisation; `name` is NUL-terminated.
        check_status!(unsafe {
            sys::napi_create_function(
                env.raw(),
                name.as_ptr(),
                name.to_bytes().len() as isize,
                callback,
                ptr::null_mut(),
                &mut f,
            )
        })?;
        // SAFETY: `exports` is the module's exports object, `f` the function just made.
        check_status!(unsafe { sys::napi_set_named_property(env.raw(), exports.raw(), name.as_ptr(), f) })?;
    }
    Ok(())
}
