//! boot (todo)
