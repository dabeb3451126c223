//! AFL++ entry point of the `rudp_wire` target (see the crate docs).
fn main() {
    afl::fuzz!(|data: &[u8]| {
        deccom_fuzz::rudp_wire(data);
    });
}
