//! The route stage: classify a request once, so later stages match on a small enum instead of
//! re-parsing paths.
