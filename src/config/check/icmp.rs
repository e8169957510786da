//! `type = "icmp"`: an echo request, for devices with nothing else to ask.

use toml::Spanned;

use super::super::source::Ctx;
use super::super::spec::CheckSpec;
use crate::model::CheckKind;

/// Refused when this host lets gslb send no echo request at all: a clear
/// error when the zone is loaded, not a region that never comes up.
pub(super) fn build(cx: &mut Ctx<'_, '_>, check: &Spanned<String>, s: &CheckSpec) -> CheckKind {
    if let Err(e) = crate::health::icmp_available() {
        cx.err(
            &s.kind,
            format!(
                "check {}: cannot send ICMP echo requests: {e}",
                check.get_ref()
            ),
        );
    }
    CheckKind::Icmp
}
