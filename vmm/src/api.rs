//! api (todo)
