//! vm (todo)
