//! The DHT datagram codec (`deccom_core::dht::wire`) and the storer's answer to it.

use deccom_core::dht::server::{Server, ServerConfig};
use deccom_core::dht::wire::{self, Message};
use deccom_core::dht::MAX_REPLY;

/// One DHT datagram: decode; a decoded one re-encodes to the same bytes (a GET to its padded
/// length) and decodes again to the same message; a storer's reply is never larger than an
/// unproven request (nor than MAX_REPLY) and decodes.
pub fn dht_wire(data: &[u8]) {
    let Ok(m) = wire::decode(data) else { return };
    let again = m.encode();
    assert_eq!(again, data, "re-encoding differs");
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
