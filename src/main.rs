fn main() -> std::process::ExitCode {
    postdesk::cli::main()
}
