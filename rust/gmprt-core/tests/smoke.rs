use std::sync::atomic::{AtomicUsize, Ordering::*};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gmprt_core::{Body, Config, Cx, NoHooks, Sched, Step};

struct Count(Arc<AtomicUsize>);
impl Body for Count {
    fn step(&mut self, _cx: &mut Cx<'_>) -> Step {
        self.0.fetch_add(1, Relaxed);
        Step::Done
    }
}

#[test]
fn smoke_million() {
    for procs in [1, 2, 4] {
        let s = Sched::new(
            Config {
                procs,
                ..Config::default()
            },
            Box::new(NoHooks),
        );
        let n = Arc::new(AtomicUsize::new(0));
        let t = Instant::now();
        for _ in 0..1_000_000 {
            s.spawn(Box::new(Count(n.clone()))).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while n.load(Relaxed) < 1_000_000 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        eprintln!("procs={procs} {:?} {:?}", t.elapsed(), s.stats());
        assert_eq!(n.load(Relaxed), 1_000_000);
        s.stop();
        assert!(s.join(Duration::from_secs(5)));
    }
}
