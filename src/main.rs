fn main() -> std::process::ExitCode {
    lifeboat::cli::main()
}
