//! PCI hotplug policy over `qmp-client` (work in progress).
#![forbid(unsafe_code)]
