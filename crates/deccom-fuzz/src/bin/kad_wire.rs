//! AFL++ entry point of the `kad_wire` target (see the crate docs).
fn main() {
    afl::fuzz!(|data: &[u8]| {
        deccom_fuzz::kad_wire(data);
    });
}
