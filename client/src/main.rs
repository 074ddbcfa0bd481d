//! `pigeon`: the command-line client of the Pigeon broker.

fn main() {
    eprintln!("pigeon: the command-line client is not built yet; see README.md");
    std::process::exit(2);
}
