//! Placeholder: this layer is being built.
