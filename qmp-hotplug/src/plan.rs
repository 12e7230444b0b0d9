//! A plan: the ordered QMP steps of one operation, each with the step that undoes it.

use std::fmt;

use serde_json::{Map, Value, json};

/// Which of the caller's descriptors a step passes to QEMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FdRef {
    /// Tap queue `n`.
    Tap(usize),
    /// vhost-net descriptor for queue `n`.
    Vhost(usize),
    /// The disk image.
    Image,
}

/// Which fdset a step means: one QEMU already has, or the one this plan's `add-fd`
/// creates (QEMU picks its id; the executor takes it from the reply, never a guess).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FdsetRef {
    /// The fdset with this id.
    Id(u64),
    /// The fdset this plan's [`Step::AddFd`] creates.
    Planned,
}

impl fmt::Display for FdsetRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Id(id) => write!(f, "fdset {id}"),
            Self::Planned => f.write_str("the new fdset"),
        }
    }
}

/// The `/dev/fdset/...` path a planned [`Step::BlockdevAdd`] carries until the executor
/// knows the new set's id.
pub const PLANNED_FDSET_PATH: &str = "/dev/fdset/<new>";

/// One QMP command of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// `getfd`: pass a descriptor under a name.
    GetFd {
        /// The name.
        name: String,
        /// Which descriptor.
        fd: FdRef,
    },
    /// `closefd`: drop a named descriptor QEMU still holds.
    CloseFd {
        /// The name.
        name: String,
    },
    /// `netdev_add`.
    NetdevAdd {
        /// The netdev id.
        id: String,
        /// All arguments (`type`, `id`, `fd`/`fds`, `vhost`, ...).
        arguments: Map<String, Value>,
    },
    /// `netdev_del`.
    NetdevDel {
        /// The netdev id.
        id: String,
    },
    /// `add-fd` into a new fdset, which QEMU picks ([`FdsetRef::Planned`]).
    AddFd {
        /// The `opaque` text: the device and the image's fingerprint.
        opaque: String,
        /// Which descriptor.
        fd: FdRef,
    },
    /// `remove-fd` of a whole fdset: QEMU closes its descriptors once no block node uses
    /// them (and, in 7.2, only while the VM runs).
    RemoveFdset {
        /// The fdset.
        fdset: FdsetRef,
    },
    /// `blockdev-add`.
    BlockdevAdd {
        /// The top node's name.
        node_name: String,
        /// All arguments; for a planned fdset, `file.filename` is [`PLANNED_FDSET_PATH`].
        arguments: Map<String, Value>,
        /// The fdset its protocol node reads, if any.
        fdset: Option<FdsetRef>,
    },
    /// `blockdev-del`.
    BlockdevDel {
        /// The node's name.
        node_name: String,
    },
    /// `device_add`.
    DeviceAdd {
        /// The device id.
        id: String,
        /// All arguments (`driver`, `id`, `bus`, `addr`, ...).
        arguments: Map<String, Value>,
    },
    /// `device_del`, then wait for the guest to let go (`DEVICE_DELETED`).
    DeviceDel {
        /// The device id.
        id: String,
    },
    /// `set_link`: a NIC's link state as the guest sees it.
    SetLink {
        /// The NIC's device id.
        id: String,
        /// Up or down.
        up: bool,
    },
    /// `object-add`: an intent marker.
    ObjectAdd {
        /// The object id.
        id: String,
        /// All arguments (`qom-type`, `id`, ...).
        arguments: Map<String, Value>,
    },
    /// `object-del`.
    ObjectDel {
        /// The object id.
        id: String,
    },
}

impl Step {
    /// The QMP command name.
    pub fn command(&self) -> &'static str {
        match self {
            Self::GetFd { .. } => "getfd",
            Self::CloseFd { .. } => "closefd",
            Self::NetdevAdd { .. } => "netdev_add",
            Self::NetdevDel { .. } => "netdev_del",
            Self::AddFd { .. } => "add-fd",
            Self::RemoveFdset { .. } => "remove-fd",
            Self::BlockdevAdd { .. } => "blockdev-add",
            Self::BlockdevDel { .. } => "blockdev-del",
            Self::DeviceAdd { .. } => "device_add",
            Self::DeviceDel { .. } => "device_del",
            Self::ObjectAdd { .. } => "object-add",
            Self::ObjectDel { .. } => "object-del",
            Self::SetLink { .. } => "set_link",
        }
    }

    /// The QMP arguments, exactly as sent once resolved ([`Step::resolved`]); an
    /// unresolved planned fdset shows as `"<new>"`.
    pub fn arguments(&self) -> Value {
        match self {
            Self::GetFd { name, .. } | Self::CloseFd { name } => json!({"fdname": name}),
            Self::NetdevAdd { arguments, .. }
            | Self::BlockdevAdd { arguments, .. }
            | Self::DeviceAdd { arguments, .. }
            | Self::ObjectAdd { arguments, .. } => Value::Object(arguments.clone()),
            Self::NetdevDel { id } | Self::DeviceDel { id } | Self::ObjectDel { id } => {
                json!({"id": id})
            }
            Self::AddFd { opaque, .. } => json!({"opaque": opaque}),
            Self::RemoveFdset { fdset: FdsetRef::Id(id) } => json!({"fdset-id": id}),
            Self::RemoveFdset { fdset: FdsetRef::Planned } => json!({"fdset-id": "<new>"}),
            Self::BlockdevDel { node_name } => json!({"node-name": node_name}),
            Self::SetLink { id, up } => json!({"name": id, "up": up}),
        }
    }

    /// The step with [`FdsetRef::Planned`] replaced by `planned` (the id QEMU gave the new
    /// set), its path included; other steps as they are.
    #[must_use]
    pub fn resolved(&self, planned: Option<u64>) -> Self {
        let Some(id) = planned else { return self.clone() };
        match self {
            Self::RemoveFdset { fdset: FdsetRef::Planned } => {
                Self::RemoveFdset { fdset: FdsetRef::Id(id) }
            }
            Self::BlockdevAdd { node_name, arguments, fdset: Some(FdsetRef::Planned) } => {
                let mut arguments = arguments.clone();
                if let Some(Value::Object(file)) = arguments.get_mut("file") {
                    file.insert("filename".into(), format!("/dev/fdset/{id}").into());
                }
                Self::BlockdevAdd {
                    node_name: node_name.clone(),
                    arguments,
                    fdset: Some(FdsetRef::Id(id)),
                }
            }
            other => other.clone(),
        }
    }

    /// `true` for the steps that take something away (every undo is one; `set_link` up
    /// takes away a down link): they count as done when QEMU says the object is already
    /// gone.
    pub fn is_removal(&self) -> bool {
        matches!(
            self,
            Self::CloseFd { .. }
                | Self::NetdevDel { .. }
                | Self::RemoveFdset { .. }
                | Self::BlockdevDel { .. }
                | Self::DeviceDel { .. }
                | Self::ObjectDel { .. }
                | Self::SetLink { up: true, .. }
        )
    }

    /// The descriptor that travels with the command, if any.
    pub fn fd(&self) -> Option<FdRef> {
        match self {
            Self::GetFd { fd, .. } | Self::AddFd { fd, .. } => Some(*fd),
            _ => None,
        }
    }
}

impl fmt::Display for Step {
    /// `command target`, e.g. `netdev_add nic-a-pci-5`: how errors name a step.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = match self {
            Self::GetFd { name, .. } | Self::CloseFd { name } => name.clone(),
            Self::NetdevAdd { id, .. }
            | Self::NetdevDel { id }
            | Self::DeviceAdd { id, .. }
            | Self::DeviceDel { id }
            | Self::ObjectAdd { id, .. }
            | Self::ObjectDel { id }
            | Self::SetLink { id, .. } => id.clone(),
            Self::AddFd { .. } => "a new fdset".into(),
            Self::RemoveFdset { fdset } => fdset.to_string(),
            Self::BlockdevAdd { node_name, .. } | Self::BlockdevDel { node_name } => {
                node_name.clone()
            }
        };
        write!(f, "{} {target}", self.command())
    }
}

/// A step of a plan, with what undoes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedStep {
    /// The command.
    pub step: Step,
    /// What undoes it, if anything needs undoing.
    pub undo: Option<Step>,
    /// Earlier steps (by index) whose undo this step makes unnecessary or impossible: a
    /// `netdev_add` consumes its `getfd` names, and deleting the intent marker ends its
    /// own undo.
    pub supersedes: Vec<usize>,
    /// A final tidy-up (deleting the intent marker): when it fails, the operation still
    /// succeeded and what it would have removed is reported as left behind.
    pub best_effort: bool,
}

impl PlannedStep {
    /// A step to run, undone by `undo`.
    pub fn new(step: Step, undo: Option<Step>) -> Self {
        Self { step, undo, supersedes: Vec::new(), best_effort: false }
    }

    /// Marks the step as a tidy-up whose failure does not fail the operation.
    #[must_use]
    pub fn best_effort(mut self) -> Self {
        self.best_effort = true;
        self
    }

    /// Declares that this step takes over the undo of the `earlier` steps.
    #[must_use]
    pub fn superseding(mut self, earlier: impl IntoIterator<Item = usize>) -> Self {
        self.supersedes.extend(earlier);
        self
    }
}

/// The ordered steps of one hotplug operation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    steps: Vec<PlannedStep>,
}

impl Plan {
    /// A plan of `steps`, in order.
    pub fn new(steps: Vec<PlannedStep>) -> Self {
        Self { steps }
    }

    /// The steps, in order.
    pub fn steps(&self) -> &[PlannedStep] {
        &self.steps
    }

    /// What to run, in order, to take back the first `completed` steps (after step
    /// `completed` failed): each completed step's undo, newest first, leaving out undos
    /// that a later completed step superseded.
    pub fn undo_after(&self, completed: usize) -> Vec<Step> {
        let mut undos: Vec<(usize, &Step)> = Vec::new();
        for (index, planned) in self.steps.iter().enumerate().take(completed) {
            undos.retain(|(earlier, _)| !planned.supersedes.contains(earlier));
            if let Some(undo) = &planned.undo {
                undos.push((index, undo));
            }
        }
        undos.into_iter().rev().map(|(_, undo)| undo.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn numbered(n: usize) -> Step {
        Step::CloseFd { name: format!("s{n}") }
    }

    fn undo_of(n: usize) -> Step {
        Step::NetdevDel { id: format!("u{n}") }
    }

    proptest! {
        /// Without supersession the undo list is exactly the completed steps' undos, newest first.
        #[test]
        fn undo_reverses_exactly_the_completed_steps(
            has_undo in proptest::collection::vec(any::<bool>(), 0..12),
            completed_seed: usize,
        ) {
            let steps: Vec<PlannedStep> = has_undo.iter().enumerate()
                .map(|(n, undo)| PlannedStep::new(numbered(n), undo.then(|| undo_of(n))))
                .collect();
            let completed = completed_seed % (steps.len() + 1);
            let plan = Plan::new(steps);
            let expected: Vec<Step> = (0..completed).rev()
                .filter(|n| has_undo[*n]).map(undo_of).collect();
            prop_assert_eq!(plan.undo_after(completed), expected);
        }

        /// A superseded undo is dropped only once the superseding step has completed.
        #[test]
        fn supersession_applies_only_after_the_superseding_step(
            len in 2usize..10, superseding_seed: usize, superseded_seed: usize, completed_seed: usize,
        ) {
            let superseding = 1 + superseding_seed % (len - 1);
            let superseded = superseded_seed % superseding;
            let steps: Vec<PlannedStep> = (0..len).map(|n| {
                let step = PlannedStep::new(numbered(n), Some(undo_of(n)));
                if n == superseding { step.superseding([superseded]) } else { step }
            }).collect();
            let completed = completed_seed % (len + 1);
            let undone = Plan::new(steps).undo_after(completed);
            prop_assert_eq!(undone.contains(&undo_of(superseded)),
                            superseded < completed && completed <= superseding);
            prop_assert_eq!(undone.len(), completed - usize::from(completed > superseding));
        }
    }

    #[test]
    fn steps_render_as_qmp() {
        let step = Step::AddFd { opaque: "qmp-rs:disk-a-pci-4:blk=7.0".into(), fd: FdRef::Image };
        assert_eq!(step.command(), "add-fd");
        assert_eq!(step.arguments(), json!({"opaque": "qmp-rs:disk-a-pci-4:blk=7.0"}));
        assert_eq!(step.fd(), Some(FdRef::Image));
        assert_eq!(step.to_string(), "add-fd a new fdset");
        assert_eq!(
            Step::DeviceDel { id: "nic-a-pci-5".into() }.to_string(),
            "device_del nic-a-pci-5"
        );
        let remove = Step::RemoveFdset { fdset: FdsetRef::Planned };
        assert_eq!(remove.fd(), None);
        assert_eq!(remove.to_string(), "remove-fd the new fdset");
        assert_eq!(remove.resolved(Some(3)).arguments(), json!({"fdset-id": 3}));
        assert_eq!(remove.resolved(None), remove);
    }

    #[test]
    fn a_planned_fdset_resolves_into_the_node_path() {
        let mut arguments = Map::new();
        arguments.insert("driver".into(), "raw".into());
        arguments.insert("file".into(), json!({"driver": "file", "filename": PLANNED_FDSET_PATH}));
        let step = Step::BlockdevAdd {
            node_name: "disk-a-pci-4".into(),
            arguments,
            fdset: Some(FdsetRef::Planned),
        };
        let resolved = step.resolved(Some(7));
        assert_eq!(resolved.arguments()["file"]["filename"], "/dev/fdset/7");
        assert!(matches!(resolved, Step::BlockdevAdd { fdset: Some(FdsetRef::Id(7)), .. }));
    }
}
