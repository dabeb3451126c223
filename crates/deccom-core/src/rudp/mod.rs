//! Reliable UDP (sans-IO). See mod docs once written.
