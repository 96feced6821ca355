//! vcpu (todo)
