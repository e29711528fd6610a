//! Setting hooks: a string setting whose values are checked when set, with PostgreSQL's own
//! message and hint for a refused one, and the reservation of the `dex_collector` prefix.

use std::ffi::{c_char, c_void, CStr, CString};

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;
use pgrx::prelude::*;

/// Why a value was refused: PostgreSQL's error for the `SET` (or the reload that tried it).
pub struct Rejection {
    pub message: String,
    pub hint: Option<&'static str>,
}

/// The check of a string setting's non-empty values (an empty value, unset, is always accepted).
pub trait StringCheck {
    fn check(value: &str) -> Result<(), Rejection>;
}

/// Defines a string setting whose values `C` checks.
pub fn define_checked_string<C: StringCheck>(
    name: &'static CStr,
    short_description: &'static CStr,
    long_description: &'static CStr,
    setting: &'static GucSetting<Option<CString>>,
    context: GucContext,
    flags: GucFlags,
) {
    // SAFETY: the check hook is `#[pg_guard]`ed and never unwinds into PostgreSQL.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            name,
            short_description,
            long_description,
            setting,
            context,
            flags,
            Some(check_hook::<C>),
            None,
            None,
        );
    }
}

/// Makes every other name under `prefix` an error, and drops such placeholders, in this session.
pub fn reserve_prefix(prefix: &CStr) {
    // SAFETY: called from _PG_init after our settings are defined, as PostgreSQL's own modules do.
    unsafe { pg_sys::MarkGUCPrefixReserved(prefix.as_ptr()) }
}

#[pg_guard]
unsafe extern "C-unwind" fn check_hook<C: StringCheck>(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: PostgreSQL passes a pointer to the proposed value, a C string or null.
    let value = match unsafe { newval.as_ref().and_then(|ptr| ptr.as_ref()) } {
        Some(ptr) => unsafe { CStr::from_ptr(ptr) }
            .to_string_lossy()
            .trim()
            .to_string(),
        None => return true,
    };
    if value.is_empty() {
        return true;
    }
    match C::check(&value) {
        Ok(()) => true,
        Err(rejection) => {
            // SAFETY: the texts are copied into PostgreSQL's memory, where it expects them.
            unsafe {
                pg_sys::GUC_check_errmsg_string = pstrdup(&rejection.message);
                if let Some(hint) = rejection.hint {
                    pg_sys::GUC_check_errhint_string = pstrdup(hint);
                }
            }
            false
        }
    }
}

/// `text` copied into the current memory context (null if it has a NUL, which ours never do).
///
/// # Safety
/// Needs a current memory context, as any check hook has.
unsafe fn pstrdup(text: &str) -> *mut c_char {
    match CString::new(text) {
        Ok(text) => unsafe { pg_sys::pstrdup(text.as_ptr()) },
        Err(_) => std::ptr::null_mut(),
    }
}
