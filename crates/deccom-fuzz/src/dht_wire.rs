//! The DHT datagram codec (`deccom_core::dht::wire`) and the storer's answer to it.

use deccom_core::dht::server::{Server, ServerConfig};
use deccom_core::dht::wire::{self, Message, GET_LEN};
use deccom_core::dht::MAX_REPLY;

/// One DHT datagram: decode; a decoded one re-encodes to the same bytes (a GET to the same
/// fields and length: its padding is zeros when we send it, and its content is ignored when we
/// receive it) and decodes again to the same message; a storer's reply is never larger than an
/// unproven request (nor than MAX_REPLY) and decodes.
pub fn dht_wire(data: &[u8]) {
    let Ok(m) = wire::decode(data) else { return };
    let again = m.encode();
    if matches!(m, Message::Get { .. }) {
        assert_eq!(again.len(), data.len(), "a GET re-encodes to its padded length");
        assert_eq!(again[..GET_LEN], data[..GET_LEN], "re-encoding differs");
    } else {
        assert_eq!(again, data, "re-encoding differs");
    }
    assert_eq!(wire::decode(&again).expect("re-decodes"), m);
    let mut server = Server::new(ServerConfig::default(), [7; 32]);
    let h = server.handle(data, &[1; 18], &[([2; 32], [3; 18])], 1000);
    if let Some(r) = h.reply {
        assert!(r.len() <= MAX_REPLY);
        if let Message::Get { len, .. } = m {
            assert!(r.len() <= len, "amplification: reply {} > request {len}", r.len());
        }
        wire::decode(&r).expect("a reply decodes");
    }
}
