//! One module per command; each adds its command to [`crate::Ctx`].

pub(crate) mod approve;
pub(crate) mod check;
pub(crate) mod deploy;
pub(crate) mod history;
pub(crate) mod plan;
pub(crate) mod promote;
pub(crate) mod reconcile;
pub(crate) mod redrive;
pub(crate) mod reject;
pub(crate) mod release;
pub(crate) mod rollback;
pub(crate) mod status;

/// Who runs this command, as records and messages name them.
pub(crate) fn operator() -> String {
    std::env::var("USER").map_or_else(|_| "ferry CLI".to_string(), |u| format!("{u} (ferry CLI)"))
}
