//! The event trigger behind `dex_collector.before_drop`, which reads the statement's parse tree.

use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::prelude::*;

/// The event trigger function behind `dex_collector.before_drop`: at the start of a statement
/// that drops dex_collector (`DROP EXTENSION` naming it, `DROP SCHEMA ... CASCADE` of its schema,
/// `DROP OWNED BY` its owner), runs `dex_collector.unschedule_all()` so no pg_cron job is left
/// calling functions that are about to disappear. Its work is undone if the drop fails.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn dex_collector_before_drop(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: Postgres calls an event trigger function with EventTriggerData as its context.
    let dropped = unsafe { dropped_by(fcinfo) };
    let drops_this_extension = match dropped {
        Dropped::Extensions(names) => names.iter().any(|name| name == "dex_collector"),
        Dropped::SchemasWithContents(names) => sql_says_yes(
            "SELECT n.nspname = ANY ($1)
               FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
              WHERE e.extname = 'dex_collector'",
            &[names.into()],
        ),
        Dropped::OwnedBy(roles) => sql_says_yes(
            "SELECT e.extowner = ANY ($1) FROM pg_catalog.pg_extension e WHERE e.extname = 'dex_collector'",
            &[roles.into()],
        ),
        Dropped::Other => false,
    };
    // Only for a role that may drop it: anyone else meets PostgreSQL's own "must be owner".
    let may_drop = || {
        sql_says_yes(
            "SELECT pg_catalog.pg_has_role(current_user, e.extowner, 'USAGE')
               FROM pg_catalog.pg_extension e WHERE e.extname = 'dex_collector'",
            &[],
        )
    };
    if drops_this_extension && may_drop() {
        if let Err(error) = Spi::run("SELECT dex_collector.unschedule_all()") {
            error!("dex_collector: could not remove its pg_cron jobs before the drop: {error}");
        }
    }
    pg_sys::Datum::from(0)
}

/// The answer of a yes/no query; no, when it has none (no such extension) or fails.
fn sql_says_yes(query: &str, args: &[pgrx::datum::DatumWithOid<'_>]) -> bool {
    Spi::get_one_with_args::<bool>(query, args)
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// What a statement an event trigger sees would drop, as far as dex_collector is concerned.
enum Dropped {
    /// `DROP EXTENSION` of these names.
    Extensions(Vec<String>),
    /// `DROP SCHEMA ... CASCADE` of these schemas (without CASCADE the drop of a schema that holds
    /// the extension fails, and so nothing goes).
    SchemasWithContents(Vec<String>),
    /// `DROP OWNED BY` these roles (those that exist).
    OwnedBy(Vec<pg_sys::Oid>),
    Other,
}

/// # Safety
/// `fcinfo` must be the call info of an event trigger function.
unsafe fn dropped_by(fcinfo: pg_sys::FunctionCallInfo) -> Dropped {
    // SAFETY (whole body): the caller guarantees an event trigger call, whose context is an
    // EventTriggerData holding the statement's parse tree; node tags are checked before any cast:
    // a DropStmt of extensions or schemas lists String nodes, a DropOwnedStmt RoleSpec nodes.
    unsafe {
        let context = (*fcinfo).context;
        if context.is_null() || (*context).type_ != pg_sys::NodeTag::T_EventTriggerData {
            return Dropped::Other;
        }
        let tree = (*context.cast::<pg_sys::EventTriggerData>()).parsetree;
        if tree.is_null() {
            return Dropped::Other;
        }
        match (*tree).type_ {
            pg_sys::NodeTag::T_DropStmt => {
                let drop = tree.cast::<pg_sys::DropStmt>();
                match (*drop).removeType {
                    pg_sys::ObjectType::OBJECT_EXTENSION => {
                        Dropped::Extensions(string_nodes((*drop).objects))
                    }
                    pg_sys::ObjectType::OBJECT_SCHEMA
                        if (*drop).behavior == pg_sys::DropBehavior::DROP_CASCADE =>
                    {
                        Dropped::SchemasWithContents(string_nodes((*drop).objects))
                    }
                    _ => Dropped::Other,
                }
            }
            pg_sys::NodeTag::T_DropOwnedStmt => {
                let roles = (*tree.cast::<pg_sys::DropOwnedStmt>()).roles;
                Dropped::OwnedBy(
                    list_nodes(roles)
                        .filter(|node| (**node).type_ == pg_sys::NodeTag::T_RoleSpec)
                        .map(|node| pg_sys::get_rolespec_oid(node.cast::<pg_sys::RoleSpec>(), true))
                        .filter(|oid| *oid != pg_sys::InvalidOid)
                        .collect(),
                )
            }
            _ => Dropped::Other,
        }
    }
}

/// The non-null nodes of a parse tree `List`.
///
/// # Safety
/// `list` must be null or a valid `List` of node pointers that outlives the iterator.
unsafe fn list_nodes(list: *mut pg_sys::List) -> impl Iterator<Item = *mut pg_sys::Node> {
    // SAFETY: the caller guarantees a valid list; `length` elements follow `elements`.
    let length = if list.is_null() {
        0
    } else {
        unsafe { (*list).length }
    };
    (0..usize::try_from(length).unwrap_or(0))
        // SAFETY: i < length.
        .map(move |i| unsafe { (*(*list).elements.add(i)).ptr_value.cast::<pg_sys::Node>() })
        .filter(|node| !node.is_null())
}

/// The values of a `List` of `String` nodes (names in a `DROP` statement).
///
/// # Safety
/// As for [`list_nodes`].
unsafe fn string_nodes(list: *mut pg_sys::List) -> Vec<String> {
    // SAFETY: node tags are checked before the cast; a String node's sval is a C string or null.
    unsafe {
        list_nodes(list)
            .filter(|node| (**node).type_ == pg_sys::NodeTag::T_String)
            .filter_map(|node| {
                let value = (*node.cast::<pg_sys::String>()).sval;
                (!value.is_null()).then(|| CStr::from_ptr(value).to_string_lossy().into_owned())
            })
            .collect()
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn pg_finfo_dex_collector_before_drop() -> &'static pg_sys::Pg_finfo_record {
    const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1
}
