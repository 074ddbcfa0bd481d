//! `pigeon-broker`: the Pigeon broker server.

fn main() {
    eprintln!("pigeon-broker: the network server is not built yet; see README.md");
    std::process::exit(2);
}
