//! `switchyard`: the Switchyard daemon and command-line tool. Everything
//! lives in the library; see its crate docs for the layout.

fn main() -> std::process::ExitCode {
    switchyard::cli::main()
}
