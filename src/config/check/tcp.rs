//! `type = "tcp"`: the endpoint is up when a connection opens.

use toml::Spanned;

use super::super::source::Ctx;
use super::super::spec::CheckSpec;
use crate::model::CheckKind;

pub(super) fn build(cx: &mut Ctx<'_, '_>, name: &Spanned<String>, s: &CheckSpec) -> CheckKind {
    if s.port.is_none() && s.target.is_none() {
        cx.err(
            name,
            format!("check {}: a tcp check needs `port`", name.get_ref()),
        );
    }
    CheckKind::Tcp
}
