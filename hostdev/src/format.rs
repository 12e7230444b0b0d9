//! What an image's first bytes say about its format: facts for a caller that must not let
//! a guest-written header choose a driver, but wants to notice when the declared format and
//! the header disagree.

use std::io;
use std::os::fd::AsFd;

use nix::errno::Errno;
use nix::sys::uio::pread;

/// How many bytes [`ImageFormat::sniff`] looks at, at most: one sector, which holds every
/// signature known here (the farthest, VDI's, ends at byte 68).
pub const HEADER_LEN: usize = 512;

/// A disk image format recognised by its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ImageFormat {
    /// QEMU's qcow2: magic `QFI\xfb`, then a big-endian version of 2 or more (3 today).
    Qcow2 {
        /// The header's version field.
        version: u32,
    },
    /// QEMU's first qcow: magic `QFI\xfb`, version 1.
    Qcow,
    /// QEMU enhanced disk: magic `QED\0`.
    Qed,
    /// `VMware`'s VMDK: a sparse extent (`KDMV`), an old `COWD` extent, or a text descriptor
    /// (`# Disk DescriptorFile`).
    Vmdk,
    /// `VirtualBox`'s VDI: signature `0xbeda107f` (little-endian) at byte 64.
    Vdi,
    /// Hyper-V VHDX: `vhdxfile`.
    Vhdx,
    /// Virtual PC / Hyper-V VHD, dynamic: `conectix` at the start (a fixed VHD has it only
    /// in its footer, at the end, and is not recognised here).
    Vpc,
    /// LUKS encryption, version 1 or 2: `LUKS\xba\xbe`.
    Luks,
    /// Parallels: `WithoutFreeSpace` or `WithouFreSpacExt`.
    Parallels,
}

impl ImageFormat {
    /// The format whose signature `header` (the first bytes of an image) starts with, or
    /// `None` (raw data, an unknown format, or fewer bytes than the signature needs).
    ///
    /// ```
    /// use hostdev::format::ImageFormat;
    /// let qcow2 = b"QFI\xfb\x00\x00\x00\x03rest of the header";
    /// assert_eq!(ImageFormat::sniff(qcow2), Some(ImageFormat::Qcow2 { version: 3 }));
    /// assert_eq!(ImageFormat::sniff(&[0; 512]), None);
    /// ```
    pub fn sniff(header: &[u8]) -> Option<Self> {
        // Signatures at the start first: a verdict on the first bytes then holds whatever
        // follows them (the VDI check at byte 64 comes last).
        const AT_START: [(&[u8], ImageFormat); 9] = [
            (b"QED\0", ImageFormat::Qed),
            (b"KDMV", ImageFormat::Vmdk),
            (b"COWD", ImageFormat::Vmdk),
            (b"# Disk DescriptorFile", ImageFormat::Vmdk),
            (b"vhdxfile", ImageFormat::Vhdx),
            (b"conectix", ImageFormat::Vpc),
            (b"LUKS\xba\xbe", ImageFormat::Luks),
            (b"WithoutFreeSpace", ImageFormat::Parallels),
            (b"WithouFreSpacExt", ImageFormat::Parallels),
        ];
        if let Some(rest) = header.strip_prefix(b"QFI\xfb") {
            return match u32::from_be_bytes(*rest.first_chunk()?) {
                0 => None,
                1 => Some(Self::Qcow),
                version => Some(Self::Qcow2 { version }),
            };
        }
        if let Some((_, format)) = AT_START.iter().find(|(magic, _)| header.starts_with(magic)) {
            return Some(*format);
        }
        (header.get(64..68) == Some(&0xbeda_107f_u32.to_le_bytes())).then_some(Self::Vdi)
    }

    /// QEMU's `blockdev-add` driver for the format (`qcow2`, `vmdk`, ...).
    pub fn driver(self) -> &'static str {
        match self {
            Self::Qcow2 { .. } => "qcow2",
            Self::Qcow => "qcow",
            Self::Qed => "qed",
            Self::Vmdk => "vmdk",
            Self::Vdi => "vdi",
            Self::Vhdx => "vhdx",
            Self::Vpc => "vpc",
            Self::Luks => "luks",
            Self::Parallels => "parallels",
        }
    }
}

/// Reads the first bytes of the file `fd` into `buf`, from offset 0 with `pread` (the file
/// offset is left alone), until `buf` is full or the file ends; returns how many were read.
///
/// # Errors
/// The OS error of `pread`; `EINTR` is retried.
pub fn read_header(fd: impl AsFd, buf: &mut [u8]) -> io::Result<usize> {
    let fd = fd.as_fd();
    let mut filled = 0;
    while filled < buf.len() {
        let offset = i64::try_from(filled).map_err(|_| io::ErrorKind::InvalidInput)?;
        match pread(fd, &mut buf[filled..], offset) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(Errno::EINTR) => {}
            Err(errno) => return Err(errno.into()),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use std::io::{Seek, SeekFrom, Write};

    use super::*;

    /// `magic` at `at` in an otherwise zeroed sector.
    fn sector(at: usize, magic: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0; HEADER_LEN];
        bytes[at..at + magic.len()].copy_from_slice(magic);
        bytes
    }

    #[test]
    fn every_known_signature_is_recognised() {
        let cases: [(Vec<u8>, ImageFormat); 12] = [
            (sector(0, b"QFI\xfb\0\0\0\x02"), ImageFormat::Qcow2 { version: 2 }),
            (sector(0, b"QFI\xfb\0\0\0\x03"), ImageFormat::Qcow2 { version: 3 }),
            (sector(0, b"QFI\xfb\0\0\0\x01"), ImageFormat::Qcow),
            (sector(0, b"QED\0"), ImageFormat::Qed),
            (sector(0, b"KDMV"), ImageFormat::Vmdk),
            (sector(0, b"COWD"), ImageFormat::Vmdk),
            (b"# Disk DescriptorFile\nversion=1\n".to_vec(), ImageFormat::Vmdk),
            (sector(64, &[0x7f, 0x10, 0xda, 0xbe]), ImageFormat::Vdi),
            (sector(0, b"vhdxfile"), ImageFormat::Vhdx),
            (sector(0, b"conectix"), ImageFormat::Vpc),
            (sector(0, b"LUKS\xba\xbe\0\x02"), ImageFormat::Luks),
            (sector(0, b"WithouFreSpacExt"), ImageFormat::Parallels),
        ];
        for (header, format) in cases {
            assert_eq!(ImageFormat::sniff(&header), Some(format), "{:?}", &header[..16]);
        }
        assert_eq!(
            ImageFormat::sniff(&sector(0, b"WithoutFreeSpace")),
            Some(ImageFormat::Parallels)
        );
        // A signature at the start wins over VDI's at byte 64, so the verdict on the first
        // bytes never changes with what follows.
        let mut both = sector(64, &[0x7f, 0x10, 0xda, 0xbe]);
        both[..4].copy_from_slice(b"KDMV");
        assert_eq!(ImageFormat::sniff(&both), Some(ImageFormat::Vmdk));
    }

    #[test]
    fn raw_data_short_headers_and_near_misses_are_nothing() {
        for header in [
            &[][..],
            &[0; HEADER_LEN][..],
            b"QFI\xfb",           // no version yet
            b"QFI\xfb\0\0\0\0",   // version 0: no qcow
            b"QFI\xfa\0\0\0\x03", // one bit off
            b"qfi\xfb\0\0\0\x03",
            b"LUKS\xba",
            &sector(63, &[0x7f, 0x10, 0xda, 0xbe])[..], // VDI's signature one byte early
            &sector(64, &[0x7f, 0x10, 0xda])[..67],     // cut short
        ] {
            assert_eq!(ImageFormat::sniff(header), None, "{header:?}");
        }
    }

    #[test]
    fn drivers_are_qemus_names() {
        assert_eq!(ImageFormat::Qcow2 { version: 3 }.driver(), "qcow2");
        assert_eq!(ImageFormat::Vpc.driver(), "vpc");
        assert_eq!(ImageFormat::Luks.driver(), "luks");
    }

    #[test]
    fn the_header_is_read_from_the_start_without_moving_the_offset() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"QFI\xfb\0\0\0\x03").unwrap();
        let mut buf = [0; HEADER_LEN];
        assert_eq!(read_header(&file, &mut buf).unwrap(), 8, "a short file: what there is");
        assert_eq!(ImageFormat::sniff(&buf[..8]), Some(ImageFormat::Qcow2 { version: 3 }));
        assert_eq!(file.stream_position().unwrap(), 8, "offset untouched");

        file.set_len(4096).unwrap();
        file.seek(SeekFrom::Start(100)).unwrap();
        assert_eq!(read_header(&file, &mut buf).unwrap(), HEADER_LEN);
        assert_eq!(file.stream_position().unwrap(), 100);
    }
}
