//! [`Payload`]: the bytes of an outgoing message.

/// The bytes of an outgoing message: an optional one-byte prefix, then a body that may be shared
/// with the caller (a JavaScript buffer, say), so that a large message is never copied to be sent.
/// The body must not change while the message is outstanding.
pub struct Payload {
    prefix: Option<u8>,
    body: Box<dyn AsRef<[u8]> + Send>,
}

impl Payload {
    /// `prefix` followed by `body`, without copying `body`.
    pub fn with_prefix(prefix: u8, body: impl AsRef<[u8]> + Send + 'static) -> Payload {
        Payload {
            prefix: Some(prefix),
            body: Box::new(body),
        }
    }

    /// Length in bytes, prefix included.
    #[must_use]
    pub fn len(&self) -> usize {
        usize::from(self.prefix.is_some()) + (*self.body).as_ref().len()
    }

    /// True when there are no bytes at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends bytes `start..start + len` of the message to `out`.
    pub(super) fn copy_range(&self, start: usize, len: usize, out: &mut Vec<u8>) {
        let body = (*self.body).as_ref();
        match self.prefix {
            None => out.extend_from_slice(&body[start..start + len]),
            Some(p) if start == 0 => {
                if len > 0 {
                    out.push(p);
                    out.extend_from_slice(&body[..len - 1]);
                }
            }
            Some(_) => out.extend_from_slice(&body[start - 1..start - 1 + len]),
        }
    }
}

impl From<Vec<u8>> for Payload {
    fn from(v: Vec<u8>) -> Payload {
        Payload {
            prefix: None,
            body: Box::new(v),
        }
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Payload({} bytes)", self.len())
    }
}
