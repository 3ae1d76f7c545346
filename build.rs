//! Rebuild when the built-in rule pack changes: it is embedded in the binary.
fn main() {
    println!("cargo:rerun-if-changed=config/rules");
}
