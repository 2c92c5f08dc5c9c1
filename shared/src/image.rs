//! Docker image references as both ends read them: `registry:5000/team/app:1.2` is the
//! repository `registry:5000/team/app` with the tag `1.2` (a registry's port is not a tag),
//! and `app@sha256:…` is a reference by digest, with no tag.

/// The repository and the tag of an image reference; no tag when it names none (or names a
/// digest).
pub fn split_reference(reference: &str) -> (&str, Option<&str>) {
    if reference.contains('@') {
        return (reference, None);
    }
    match reference.rsplit_once(':') {
        Some((repository, tag)) if !tag.contains('/') => (repository, Some(tag)),
        _ => (reference, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_is_not_a_tag_and_a_digest_has_none() {
        assert_eq!(split_reference("busybox"), ("busybox", None));
        assert_eq!(split_reference("busybox:1.36"), ("busybox", Some("1.36")));
        assert_eq!(
            split_reference("registry:5000/team/app"),
            ("registry:5000/team/app", None)
        );
        assert_eq!(
            split_reference("registry:5000/team/app:1.2"),
            ("registry:5000/team/app", Some("1.2"))
        );
        assert_eq!(split_reference("app@sha256:abc"), ("app@sha256:abc", None));
        assert_eq!(split_reference(""), ("", None));
    }
}
