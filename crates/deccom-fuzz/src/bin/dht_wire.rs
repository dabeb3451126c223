//! AFL++ entry point of the `dht_wire` target (see the crate docs).
fn main() {
    afl::fuzz!(|data: &[u8]| {
        deccom_fuzz::dht_wire(data);
    });
}
