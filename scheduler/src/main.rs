//! `tenant-scheduler`: not built yet (issue 4). It refuses to run rather than pretend.

fn main() {
    eprintln!("tenant-scheduler is not implemented yet: schedules (nightly backups, maintenance) arrive with issue 4");
    std::process::exit(1);
}
