package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"strings"
	"text/template"
	"time"

	"github.com/rackwatch/rackwatch/internal/bootstate"
)

// bootCmd is the boot script, boot.cmd. U-Boot's distro boot finds boot.scr on the only
// legacy-bootable partition and runs it with devtype, devnum and distro_bootpart set.
//
// It keeps RAUC's scheme (BOOT_ORDER, BOOT_x_LEFT) in a state file on the boot partition
// rather than in U-Boot's environment: Debian's QEMU U-Boot cannot saveenv, and a board's
// environment is the vendor's. internal/bootstate reads and writes the same files and must
// choose the same copy. Memory: the state is read at kernel_addr_r, which the kernel
// overwrites later; never at scriptaddr, where this script itself is being run from.
// Numbers are hex, as setexpr and itest count.
const bootCmd = `# rackwatch boot script: A/B slots with tries (images/README.md, "Boot flow").
# boot.scr is this file compiled (legacy image of type script); editing boot.cmd alone
# changes nothing. The kernel command line is in cmdline.txt.
setenv rw_dev ${devnum}:${distro_bootpart}
setenv rw_mem ${kernel_addr_r}

setenv RW_ARGS
mw.b ${rw_mem} 0 1001
if fatload ${devtype} ${rw_dev} ${rw_mem} cmdline.txt 1000; then
	env import -t -r ${rw_mem} ${filesize} RW_ARGS
fi
if test -z "${RW_ARGS}"; then
	setenv RW_ARGS "{{.Cmdline}}"
fi

# The newest valid copy of the state: a copy is valid when RW_END equals RW_GEN (a write
# cut short lacks one of them or has RW_GEN, the last line, shortened).
setenv rw_cur
setenv rw_gen
for i in 0 1; do
	setenv RW_GEN
	setenv RW_END
	mw.b ${rw_mem} 0 1001
	if fatload ${devtype} ${rw_dev} ${rw_mem} rwstate.${i} 1000; then
		env import -t -r ${rw_mem} ${filesize} RW_GEN RW_END
	fi
	if test -n "${RW_GEN}" && test "${RW_GEN}" = "${RW_END}"; then
		if test -z "${rw_cur}"; then
			setenv rw_cur ${i}
			setenv rw_gen ${RW_GEN}
		elif itest ${RW_GEN} -gt ${rw_gen}; then
			setenv rw_cur ${i}
			setenv rw_gen ${RW_GEN}
		fi
	fi
done

setenv BOOT_ORDER
setenv BOOT_A_LEFT
setenv BOOT_B_LEFT
setenv BOOT_TRIAL
setenv RW_GEN
setenv RW_END
if test -n "${rw_cur}"; then
	mw.b ${rw_mem} 0 1001
	fatload ${devtype} ${rw_dev} ${rw_mem} rwstate.${rw_cur} 1000
	env import -t -r ${rw_mem} ${filesize} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT BOOT_TRIAL RW_GEN RW_END
	echo "rackwatch: boot state rwstate.${rw_cur} gen ${RW_GEN}: order ${BOOT_ORDER}, tries A ${BOOT_A_LEFT} B ${BOOT_B_LEFT}, trial ${BOOT_TRIAL}"
else
	echo "rackwatch: no valid boot state: starting from the default"
	setenv rw_cur 1
	setenv RW_GEN 0
	setenv BOOT_ORDER "A B"
	setenv BOOT_A_LEFT {{.MaxTries}}
	setenv BOOT_B_LEFT {{.MaxTries}}
fi
if test "${BOOT_ORDER}" != "B A"; then
	setenv BOOT_ORDER "A B"
fi

# The first slot in order with tries left; this boot uses one of them.
setenv rw_slot
for s in ${BOOT_ORDER}; do
	if test -z "${rw_slot}"; then
		if test "${s}" = A && itest "${BOOT_A_LEFT}" -gt 0; then
			setenv rw_slot A
			setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1
		elif test "${s}" = B && itest "${BOOT_B_LEFT}" -gt 0; then
			setenv rw_slot B
			setexpr BOOT_B_LEFT ${BOOT_B_LEFT} - 1
		fi
	fi
done
# None left: never brick. Both get their tries again, the slot on trial goes last.
if test -z "${rw_slot}"; then
	echo "rackwatch: no slot has tries left: both get {{.MaxTries}} again"
	if test "${BOOT_TRIAL}" = A; then
		setenv BOOT_ORDER "B A"
	elif test "${BOOT_TRIAL}" = B; then
		setenv BOOT_ORDER "A B"
	fi
	setenv BOOT_A_LEFT {{.MaxTries}}
	setenv BOOT_B_LEFT {{.MaxTries}}
	if test "${BOOT_ORDER}" = "B A"; then
		setenv rw_slot B
		setexpr BOOT_B_LEFT ${BOOT_B_LEFT} - 1
	else
		setenv rw_slot A
		setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1
	fi
fi

# Write the other copy, one generation up; the copy just read stays as it was.
setexpr RW_GEN ${RW_GEN} + 1
setenv RW_END ${RW_GEN}
if test "${rw_cur}" = 0; then
	setenv rw_next 1
else
	setenv rw_next 0
fi
env export -t ${rw_mem} BOOT_A_LEFT BOOT_B_LEFT BOOT_ORDER BOOT_TRIAL RW_END RW_GEN
fatwrite ${devtype} ${rw_dev} ${rw_mem} rwstate.${rw_next} ${filesize} || echo "rackwatch: could not write the boot state: booting anyway"

if test "${rw_slot}" = B; then
	setenv rw_name {{.SlotB}}
	setenv rw_s b
else
	setenv rw_name {{.SlotA}}
	setenv rw_s a
fi
echo "rackwatch: booting slot ${rw_s} (tries left: A ${BOOT_A_LEFT}, B ${BOOT_B_LEFT})"
setenv rw_fdt ${fdtcontroladdr}
if test -n "${fdt_addr}"; then
	setenv rw_fdt ${fdt_addr}
fi
if part number ${devtype} ${devnum} ${rw_name} rw_part; then
	if fatload ${devtype} ${devnum}:${rw_part} ${kernel_addr_r} vmlinuz; then
		if fatload ${devtype} ${devnum}:${rw_part} ${ramdisk_addr_r} initramfs.cpio.gz; then
			setenv bootargs "${RW_ARGS} rackwatch.slot=${rw_s}"
			booti ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${rw_fdt}
		fi
	fi
fi
echo "rackwatch: slot ${rw_s} did not boot: resetting (it has one try less)"
reset
`

type script struct {
	text  string // boot.cmd
	image []byte // boot.scr
}

// bootScript returns boot.cmd with the default kernel command line filled in, and boot.scr.
func bootScript(cmdline string, mtime time.Time) (script, error) {
	// The line is pasted into the script between double quotes.
	if strings.ContainsAny(cmdline, "\"$\\;`\n\r\x00") {
		return script{}, fmt.Errorf("kernel command line %q: no quotes, $, \\, ; or line breaks", cmdline)
	}
	var b bytes.Buffer
	err := template.Must(template.New("boot.cmd").Parse(bootCmd)).Execute(&b, map[string]any{
		"Cmdline": cmdline, "MaxTries": bootstate.MaxTries, "SlotA": slotAName, "SlotB": slotBName,
	})
	if err != nil {
		return script{}, err
	}
	return script{text: b.String(), image: scriptImage(b.Bytes(), "rackwatch boot", mtime)}, nil
}

// cmdlineFile is cmdline.txt: U-Boot text environment (env import -t -r), so a site may
// edit it on any PC, with either line ending.
func cmdlineFile(cmdline string) []byte {
	return []byte("# The kernel command line of the rackwatch firmware: edit the RW_ARGS line (one line).\n" +
		"# The boot script adds rackwatch.slot=. Keys: images/README.md. Without this file\n" +
		"# (or without RW_ARGS) the boot script uses the line it was built with.\n" +
		"RW_ARGS=" + cmdline + "\n")
}

// Legacy U-Boot image header (U-Boot's include/image.h, struct legacy_img_hdr): 64 bytes,
// big-endian, CRC-32 (IEEE) of the header and of the data.
const (
	ihMagic      = 0x27051956
	ihOSLinux    = 5
	ihArchARM64  = 22
	ihTypeScript = 6
	ihCompNone   = 0
	ihNameLen    = 32
)

// scriptImage is what `mkimage -A arm64 -O linux -T script -C none -n NAME -d boot.cmd` makes
// with SOURCE_DATE_EPOCH set to mtime: a legacy header, then the data of a multi-file image
// with one file (its length, a zero length that ends the list, the script). Written here
// rather than by running mkimage, so that building the image needs no u-boot-tools; the
// test TestScriptImageIsMkimage checks the bytes against Debian's mkimage.
func scriptImage(text []byte, name string, mtime time.Time) []byte {
	var data bytes.Buffer
	binary.Write(&data, binary.BigEndian, uint32(len(text)))
	binary.Write(&data, binary.BigEndian, uint32(0))
	data.Write(text)

	h := make([]byte, 64)
	be := binary.BigEndian
	be.PutUint32(h[0:], ihMagic)
	be.PutUint32(h[8:], uint32(mtime.Unix()))
	be.PutUint32(h[12:], uint32(data.Len()))
	// load address and entry point (16, 20) are 0 for a script
	be.PutUint32(h[24:], crc32.ChecksumIEEE(data.Bytes()))
	h[28], h[29], h[30], h[31] = ihOSLinux, ihArchARM64, ihTypeScript, ihCompNone
	copy(h[32:32+ihNameLen-1], name)
	be.PutUint32(h[4:], crc32.ChecksumIEEE(h))
	return append(h, data.Bytes()...)
}
