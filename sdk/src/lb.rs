//! The load-balancing seam: implement [`LoadBalancer`] and call [`export_lb!`](crate::export_lb).

use crate::bindings::lb::exports::switchyard::policy::lb as wit_lb;
pub use crate::bindings::lb::switchyard::policy::types::{Backend, LiveStat, Request};
use crate::Config;

/// A load-balancing policy. One value lives in each Wasm instance; the
/// gateway keeps a small pool of instances, so counters kept in `self` are
/// per instance (use [`crate::host::shared`] for gateway-wide state).
pub trait LoadBalancer: Sized + 'static {
    /// Ask the host for per-call [`LiveStat`]s (active requests, latency,
    /// errors). Policies that ignore them leave this `false` and save the copy.
    const NEEDS_LIVE_STATS: bool = false;

    /// Build the policy from its config table. An error fails the plugin
    /// load and its text is shown to the operator.
    fn configure(config: &Config) -> Result<Self, String>;

    /// The backend set changed (membership, weight or health). Rebuild any
    /// derived structure here, not in `select`.
    fn backends_changed(&mut self, _backends: &[Backend]) {}

    /// Pick a backend: an index into `backends`. `live` is parallel to
    /// `backends` when [`Self::NEEDS_LIVE_STATS`] is set, empty otherwise.
    /// `None` means no backend fits and the gateway answers 503.
    fn select(&mut self, req: &Request, backends: &[Backend], live: &[LiveStat]) -> Option<usize>;

    /// State to carry into the next version on a hot swap. The default
    /// (empty) means the new version starts fresh from `configure`.
    /// Usually one line: `switchyard_sdk::state::save(&self.next)`.
    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Take over the previous version's [`Self::snapshot`]; called after
    /// `configure` and before the first `backends_changed`. An error fails
    /// the swap and the old version keeps serving. Usually one line:
    /// `self.next = switchyard_sdk::state::load(state)?; Ok(())`.
    fn restore(&mut self, _state: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

/// The first healthy backend at or after `start`, wrapping around.
pub fn next_healthy(backends: &[Backend], start: usize) -> Option<usize> {
    let n = backends.len();
    (0..n).map(|i| (start + i) % n).find(|&i| backends[i].healthy)
}

/// Glue between the generated exports and a [`LoadBalancer`]. Used by
/// [`export_lb!`](crate::export_lb); not part of the authoring API.
#[doc(hidden)]
pub struct Runner<T> {
    policy: Option<T>,
    backends: Vec<Backend>,
}

#[doc(hidden)]
impl<T: LoadBalancer> Runner<T> {
    pub const fn new() -> Self {
        Self { policy: None, backends: Vec::new() }
    }

    pub fn configure(&mut self, config: String) -> Result<wit_lb::Needs, String> {
        crate::host::install_panic_hook();
        let config = Config::from_json(&config)?;
        self.policy = Some(T::configure(&config)?);
        Ok(if T::NEEDS_LIVE_STATS { wit_lb::Needs::LIVE_STATS } else { wit_lb::Needs::empty() })
    }

    pub fn set_backends(&mut self, backends: Vec<Backend>) {
        self.backends = backends;
        if let Some(p) = self.policy.as_mut() {
            p.backends_changed(&self.backends);
        }
    }

    pub fn snapshot(&self) -> Vec<u8> {
        self.policy.as_ref().map_or_else(Vec::new, T::snapshot)
    }

    pub fn restore(&mut self, state: Vec<u8>) -> Result<(), String> {
        self.policy.as_mut().ok_or("restore before configure")?.restore(&state)
    }

    pub fn select(&mut self, req: &Request, live: &[LiveStat]) -> Result<u32, String> {
        let policy = self.policy.as_mut().ok_or("select before configure")?;
        match policy.select(req, &self.backends, live) {
            Some(i) => Ok(i as u32),
            None => Err("no backend available".into()),
        }
    }
}

/// Export a [`LoadBalancer`] as the component's `lb` and `lb-state`
/// interfaces (world `lb-policy-stateful`).
///
/// ```text
/// switchyard_sdk::export_lb!(MyPolicy);
/// ```
#[macro_export]
macro_rules! export_lb {
    ($policy:ty) => {
        // Exports exist only in the component; native builds (unit tests of
        // the policy logic) get none, so their linker never sees WIT names.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::bindings::lb::exports::switchyard::policy::lb as __wit;
            use $crate::bindings::lb::exports::switchyard::policy::lb_state as __wit_state;
            struct __SwitchyardLb;
            ::std::thread_local! {
                static RUNNER: ::core::cell::RefCell<$crate::lb::Runner<$policy>> =
                    const { ::core::cell::RefCell::new($crate::lb::Runner::new()) };
            }
            impl __wit::Guest for __SwitchyardLb {
                fn configure(config: ::std::string::String) -> ::core::result::Result<__wit::Needs, ::std::string::String> {
                    RUNNER.with(|r| r.borrow_mut().configure(config))
                }
                fn set_backends(backends: ::std::vec::Vec<$crate::lb::Backend>) {
                    RUNNER.with(|r| r.borrow_mut().set_backends(backends))
                }
                fn select(req: &$crate::lb::Request, live: ::std::vec::Vec<$crate::lb::LiveStat>) -> ::core::result::Result<u32, ::std::string::String> {
                    RUNNER.with(|r| r.borrow_mut().select(req, &live))
                }
            }
            impl __wit_state::Guest for __SwitchyardLb {
                fn snapshot() -> ::std::vec::Vec<u8> {
                    RUNNER.with(|r| r.borrow().snapshot())
                }
                fn restore(state: ::std::vec::Vec<u8>) -> ::core::result::Result<(), ::std::string::String> {
                    RUNNER.with(|r| r.borrow_mut().restore(state))
                }
            }
            $crate::bindings::lb::__export_lb_policy!(__SwitchyardLb with_types_in $crate::bindings::lb);
        };
    };
}
