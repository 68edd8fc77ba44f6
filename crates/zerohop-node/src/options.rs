//! A JavaScript options object, turned into options by name ([`zerohop::Options`]) for
//! the hub and its transport to take, each its own. Nothing here knows an option: it
//! only translates booleans, numbers, strings, arrays and plain objects (`undefined`
//! and `null` mean "not given").

use std::ptr;

use napi::sys;
use zerohop::{Error, ErrorCode, Options, Value};

fn bad(why: String) -> Error {
    Error::new(ErrorCode::BadOption, why)
}

/// Converts `object` (an options object, or `undefined`).
///
/// # Safety
/// `env` must be the env of the current call and `object` one of its values.
pub unsafe fn from_js(env: sys::napi_env, object: sys::napi_value) -> Result<Options, Error> {
    // SAFETY: per the contract.
    match unsafe { value(env, object, "options", 0)? } {
        None => Ok(Options::default()),
        Some(Value::Map(o)) => Ok(o),
        Some(_) => Err(bad("options must be an object".into())),
    }
}

/// The value of `v`, or `None` for `undefined` and `null`.
///
/// # Safety
/// `env` must be the env of the current call and `v` one of its values.
unsafe fn value(env: sys::napi_env, v: sys::napi_value, name: &str, depth: u32) -> Result<Option<Value>, Error> {
    if depth > 8 {
        return Err(bad(format!("{name} nests too deep")));
    }
    let mut kind = 0;
    // SAFETY: per the contract; `kind` is a valid out-pointer.
    unsafe { sys::napi_typeof(env, v, &mut kind) };
    Ok(Some(match kind {
        sys::ValueType::napi_undefined | sys::ValueType::napi_null => return Ok(None),
        sys::ValueType::napi_boolean => {
            let mut b = false;
            // SAFETY: `v` is a boolean; `b` is a valid out-pointer.
            unsafe { sys::napi_get_value_bool(env, v, &mut b) };
            Value::Bool(b)
        }
        sys::ValueType::napi_number => {
            let mut n = 0.0;
            // SAFETY: `v` is a number; `n` is a valid out-pointer.
            unsafe { sys::napi_get_value_double(env, v, &mut n) };
            Value::Number(n)
        }
        // SAFETY: `v` is a string of this call.
        sys::ValueType::napi_string => Value::Text(unsafe { string(env, v) }),
        sys::ValueType::napi_object => {
            let mut is_array = false;
            // SAFETY: `v` is an object; `is_array` is a valid out-pointer.
            unsafe { sys::napi_is_array(env, v, &mut is_array) };
            if is_array {
                let mut len = 0u32;
                // SAFETY: `v` is an array; `len` is a valid out-pointer.
                unsafe { sys::napi_get_array_length(env, v, &mut len) };
                let mut items = Vec::with_capacity(len as usize);
                for i in 0..len {
                    let mut item = ptr::null_mut();
                    // SAFETY: `v` is an array of this call; `item` is a valid out-pointer.
                    unsafe { sys::napi_get_element(env, v, i, &mut item) };
                    let item_name = format!("{name}[{i}]");
                    // SAFETY: `item` is a value of this call.
                    match unsafe { value(env, item, &item_name, depth + 1)? } {
                        Some(x) => items.push(x),
                        None => return Err(bad(format!("{item_name} is missing"))),
                    }
                }
                Value::List(items)
            } else {
                // SAFETY: `v` is an object of this call.
                Value::Map(Options::new(unsafe { entries(env, v, depth)? }))
            }
        }
        _ => return Err(bad(format!("{name} must be a boolean, number, string, array or object"))),
    }))
}

/// The given (not `undefined`) own enumerable properties of `object`.
///
/// # Safety
/// `env` must be the env of the current call and `object` one of its objects.
unsafe fn entries(env: sys::napi_env, object: sys::napi_value, depth: u32) -> Result<Vec<(String, Value)>, Error> {
    let mut names = ptr::null_mut();
    // SAFETY: per the contract; `names` is a valid out-pointer.
    unsafe { sys::napi_get_property_names(env, object, &mut names) };
    let mut len = 0u32;
    // SAFETY: `names` is the array just returned.
    unsafe { sys::napi_get_array_length(env, names, &mut len) };
    let mut out = Vec::with_capacity(len as usize);
    for i in 0..len {
        let (mut key, mut v) = (ptr::null_mut(), ptr::null_mut());
        // SAFETY: values of this call; valid out-pointers.
        unsafe {
            sys::napi_get_element(env, names, i, &mut key);
            sys::napi_get_property(env, object, key, &mut v);
        }
        // SAFETY: property names are strings (symbols are not enumerated).
        let name = unsafe { string(env, key) };
        // SAFETY: `v` is a value of this call.
        if let Some(x) = unsafe { value(env, v, &name, depth + 1)? } {
            out.push((name, x));
        }
    }
    Ok(out)
}

/// A JavaScript string as UTF-8.
///
/// # Safety
/// `env` must be the env of the current call and `v` one of its strings.
unsafe fn string(env: sys::napi_env, v: sys::napi_value) -> String {
    let mut len = 0usize;
    // SAFETY: a null buffer asks for the length.
    unsafe { sys::napi_get_value_string_utf8(env, v, ptr::null_mut(), 0, &mut len) };
    let mut buf = vec![0u8; len + 1];
    let mut written = 0usize;
    // SAFETY: `buf` has room for `len` bytes and the terminating NUL.
    unsafe { sys::napi_get_value_string_utf8(env, v, buf.as_mut_ptr().cast(), buf.len(), &mut written) };
    buf.truncate(written);
    String::from_utf8(buf).unwrap_or_default()
}
