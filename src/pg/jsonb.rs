//! The jsonb datum the DEX functions and the collection functions return, made from bytes the
//! `jsonb-binary` crate wrote.

use pgrx::pg_sys;
use pgrx::pgrx_sql_entity_graph::metadata::{
    ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable, TypeOrigin,
};
use pgrx::prelude::*;

/// A finished `jsonb` datum (varlena header included), written by the `jsonb-binary` crate
/// straight from the parsed DEX or a run's summary: no JSON text, no `jsonb_in` and its tree of
/// the whole document.
pub struct Jsonb(pub Vec<u8>);

impl IntoDatum for Jsonb {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        // SAFETY: palloc returns a block of the requested size (or raises); the bytes copied in
        // are a complete varlena whose header holds this length.
        unsafe {
            let datum = pg_sys::palloc(self.0.len()).cast::<u8>();
            std::ptr::copy_nonoverlapping(self.0.as_ptr(), datum, self.0.len());
            Some(pg_sys::Datum::from(datum))
        }
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::JSONBOID
    }
}

// SAFETY: returns the datum made above, as pgrx does for JsonB.
unsafe impl pgrx::callconv::BoxRet for Jsonb {
    unsafe fn box_into<'fcx>(
        self,
        fcinfo: &mut pgrx::callconv::FcInfo<'fcx>,
    ) -> pgrx::datum::Datum<'fcx> {
        match self.into_datum() {
            Some(datum) => unsafe { fcinfo.return_raw_datum(datum) },
            None => fcinfo.return_null(),
        }
    }
}

// SAFETY: the datum produced above is a jsonb, as this mapping declares.
unsafe impl SqlTranslatable for Jsonb {
    const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!(Jsonb);
    const TYPE_ORIGIN: TypeOrigin = TypeOrigin::External;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> = Ok(SqlMappingRef::literal("jsonb"));
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> =
        Ok(ReturnsRef::One(SqlMappingRef::literal("jsonb")));
}

/// What PostgreSQL's own `jsonb_in` stores for `json`, header included: what the tests compare
/// the bytes above with.
#[cfg(any(test, feature = "pg_test"))]
pub fn jsonb_in_bytes(json: &str) -> Vec<u8> {
    let text = std::ffi::CString::new(json).expect("JSON text has no NUL");
    // SAFETY: jsonb_in takes a C string and returns a jsonb varlena in the current context.
    unsafe {
        let datum = pgrx::direct_function_call_as_datum(
            pgrx::pg_sys::jsonb_in,
            &[Some(text.as_ptr().into())],
        )
        .expect("jsonb_in returns a datum");
        let varlena = datum.cast_mut_ptr::<pgrx::pg_sys::varlena>();
        let len = pgrx::varlena::varsize_any(varlena);
        std::slice::from_raw_parts(varlena.cast::<u8>(), len).to_vec()
    }
}
