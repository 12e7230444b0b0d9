/// Everything that can go wrong in this crate: a schema that does not parse or does not hold
/// together, and a malformed probe path or description target.
///
/// Checking arguments never fails with this type: a check always yields a
/// [`Report`](crate::Report), whose problems are data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not JSON of the shape `query-qmp-schema` returns (an array of
    /// `SchemaInfo` objects, bare or as the `"return"` of a reply).
    #[error("not a query-qmp-schema reply: {0}")]
    Json(#[from] serde_json::Error),
    /// Two schema entries share a name.
    #[error("schema entry \"{0}\" is defined twice")]
    DuplicateName(String),
    /// An entry refers to a type the schema does not define.
    #[error("schema entry \"{used_by}\" refers to undefined type \"{name}\"")]
    UndefinedType {
        /// The missing type's name.
        name: String,
        /// The entry that refers to it.
        used_by: String,
    },
    /// An entry lacks what its meta-type requires, or refers to an entry of the wrong kind
    /// (a command used as a member's type, a union variant that is not an object, ...).
    #[error("schema entry \"{entry}\" is malformed: {reason}")]
    Malformed {
        /// The entry's name.
        entry: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A probe path (`"blockdev-add/arg-type/+file/aio"`) is malformed: empty, an empty
    /// component, or a component after a terminal `!`, `$` or `^` query where none may follow.
    #[error("malformed schema path \"{path}\": {reason}")]
    MalformedPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A probe walked more than the path depth limit, which only a schema whose types
    /// refer to each other in a loop without consuming path components can cause.
    #[error("schema path \"{0}\" loops through the schema")]
    PathLoop(String),
    /// [`Schema::describe`](crate::Schema::describe) was given something that is neither a
    /// command, an event nor a path to a type.
    #[error("\"{target}\" is not a command, event or type path of this schema{}", did_you_mean(.suggestion.as_deref()))]
    NotFound {
        /// What was asked for.
        target: String,
        /// A close match, when there is one.
        suggestion: Option<String>,
    },
}

fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion.map(|s| format!(" (did you mean \"{s}\"?)")).unwrap_or_default()
}
