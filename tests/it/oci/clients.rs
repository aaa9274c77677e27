//! Unmodified OCI clients against a real `amberd`.
