//! Noise secure channel over datagrams (sans-IO). See mod docs once written.
