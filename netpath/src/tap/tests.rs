use super::*;

fn invalid(name: &str) -> &'static str {
    match validate_name(name) {
        Err(TapError::InvalidName { name: n, reason }) => {
            assert_eq!(n, name);
            reason
        }
        other => panic!("{name:?}: expected InvalidName, got {other:?}"),
    }
}

#[test]
fn valid_names() {
    for name in [
        "t",
        "tap0",
        "np-vm-1234",
        "a.b_c-d",
        "fifteen-bytes15",
        "täp",
    ] {
        validate_name(name).unwrap_or_else(|e| panic!("{name:?}: {e}"));
    }
}

#[test]
fn invalid_names() {
    assert_eq!(invalid(""), "the name is empty");
    assert_eq!(invalid("sixteen-bytes-16"), "longer than 15 bytes");
    // 14 characters but 16 bytes.
    assert_eq!(invalid("ääääääää"), "longer than 15 bytes");
    assert_eq!(invalid("."), "`.` and `..` are not interface names");
    assert_eq!(invalid(".."), "`.` and `..` are not interface names");
    assert_eq!(invalid("a/b"), "contains `/`");
    assert_eq!(invalid("/"), "contains `/`");
    assert_eq!(invalid("a:b"), "contains `:`");
    assert_eq!(invalid("eth0:1"), "contains `:`");
    assert!(invalid("tap%d").contains('%'));
    assert_eq!(invalid("a\0b"), "contains a NUL byte");
    for ws in [
        "a b",
        " a",
        "a ",
        "a\tb",
        "a\nb",
        "a\rb",
        "a\u{a0}b",
        "a\u{2003}b",
    ] {
        assert_eq!(invalid(ws), "contains whitespace", "{ws:?}");
    }
}

#[test]
fn invalid_name_is_rejected_before_any_syscall() {
    // No device can be named like this; the error must be the name, not an errno.
    let spec = TapSpec::new("bad name");
    assert!(matches!(
        create_tap(&spec),
        Err(TapError::InvalidName { .. })
    ));
    assert!(matches!(
        delete_tap("bad/name"),
        Err(TapError::InvalidName { .. })
    ));
}

#[test]
fn queue_count_is_checked_before_any_syscall() {
    for queues in [0, MAX_QUEUES + 1] {
        let spec = TapSpec {
            queues,
            ..TapSpec::new("np-q")
        };
        assert!(matches!(
            create_tap(&spec),
            Err(TapError::InvalidQueues { queues: q, .. }) if q == queues
        ));
    }
}

#[test]
fn flags_follow_the_spec() {
    let one = TapSpec::new("t");
    assert_eq!(one.flags(), libc::IFF_TAP | libc::IFF_NO_PI);
    let mq = TapSpec {
        queues: 4,
        vnet_hdr: true,
        ..TapSpec::new("t")
    };
    assert_eq!(
        mq.flags(),
        libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE | libc::IFF_VNET_HDR
    );
    assert_eq!(libc::IFF_MULTI_QUEUE, 0x100);
    assert_eq!(libc::IFF_TAP, 0x2);
    assert_eq!(libc::IFF_NO_PI, 0x1000);
}

/// `_IOW('T', nr, int)` on the architectures with the generic ioctl encoding.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[test]
fn ioctl_request_numbers() {
    const fn iow_int(nr: u32) -> u32 {
        (1 << 30) | (4 << 16) | ((b'T' as u32) << 8) | nr
    }
    assert_eq!(libc::TUNSETIFF as u32, iow_int(202));
    assert_eq!(libc::TUNSETIFF as u32, 0x4004_54ca);
    assert_eq!(libc::TUNSETPERSIST as u32, iow_int(203));
    assert_eq!(libc::TUNSETOWNER as u32, iow_int(204));
    assert_eq!(libc::TUNSETGROUP as u32, iow_int(206));
}

#[test]
fn errors_are_classified_by_errno() {
    let e = |errno| io::Error::from_raw_os_error(errno);
    assert!(matches!(
        TapError::from_io("t", TapOp::SetIff, e(libc::EPERM)),
        TapError::PermissionDenied {
            op: TapOp::SetIff,
            ..
        }
    ));
    assert!(matches!(
        TapError::from_io("t", TapOp::SetIff, e(libc::EBUSY)),
        TapError::Busy { .. }
    ));
    assert!(matches!(
        TapError::from_io("t", TapOp::OpenTun, e(libc::ENOENT)),
        TapError::TunUnavailable { .. }
    ));
    let other = TapError::from_io("t", TapOp::SetOwner, e(libc::EINVAL));
    assert!(matches!(
        other,
        TapError::Io {
            op: TapOp::SetOwner,
            ..
        }
    ));
    assert_eq!(other.errno(), Some(libc::EINVAL));
    assert_eq!(other.name(), "t");
    assert!(
        TapError::from_io("t", TapOp::SetPersist, e(libc::EPERM))
            .to_string()
            .contains("CAP_NET_ADMIN")
    );
}
