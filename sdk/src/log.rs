//! Structured logging and progress. The host labels each record with the
//! tenant, instance and request id.

use crate::bindings::switchyard::plugin::log as wit;
pub use wit::Level;

/// Emits `message` at `level` with key/value `fields`.
pub fn emit(level: Level, message: impl AsRef<str>, fields: &[(&str, &str)]) {
    let fields: Vec<wit::Field> = fields
        .iter()
        .map(|(k, v)| wit::Field {
            key: (*k).into(),
            value: (*v).into(),
        })
        .collect();
    wit::emit(level, message.as_ref(), &fields);
}

/// Emits at debug level.
pub fn debug(message: impl AsRef<str>) {
    emit(Level::Debug, message, &[]);
}

/// Emits at info level.
pub fn info(message: impl AsRef<str>) {
    emit(Level::Info, message, &[]);
}

/// Emits at warn level.
pub fn warn(message: impl AsRef<str>) {
    emit(Level::Warn, message, &[]);
}

/// Emits at error level.
pub fn error(message: impl AsRef<str>) {
    emit(Level::Error, message, &[]);
}

/// Reports progress of long work: `done` of `total` units.
pub fn progress(done: u64, total: Option<u64>, note: impl AsRef<str>) {
    wit::progress(done, total, note.as_ref());
}
