// Package nut is rackwatch's NUT network protocol server: it speaks what upsd speaks
// (RFC 9271, NUT 2.8's server/net*.c), so that stock upsc, upscmd, upsmon and every other NUT
// client read the site's UPS devices and take their shutdown orders from the appliance
// (CONTRACT.md §6).
//
// The package knows nothing of devices, pollers or the power policy: the site hands it a
// Source, a small read-mostly view of its UPSes as NUT variables. It must not import the
// site's other daemon packages, uplink/, or the drivers; sensors/ is not needed either.
//
// Where upsd's behaviour is odd but a client could depend on it, this server copies
// Debian's upsd 2.8.0 byte for byte, and a differential test holds it to that: for example
// "Description unavailable" in LIST UPS but "Unavailable" in GET UPSDESC, and every variable
// reported as NUMBER by GET TYPE. Where upsd says nothing at all (an unbalanced quote, an
// over-long line) this server answers ERR INVALID-ARGUMENT, so no client hangs.
//
// Users follow upsd.users: "upsmon primary" grants LOGIN, PRIMARY (MASTER) and FSD;
// "upsmon secondary" grants LOGIN; instcmds lists the instant commands a user may run
// ("all" for every one); actions may add SET or FSD. A user whose upsmon role is left out is
// a secondary, because that is what the CONTRACT's nut.users example is for. Passwords are
// compared in constant time.
//
// Unlike upsd, one address cannot take every connection (MaxConnsPerAddr) nor guess
// passwords at will: after a few wrong ones, its password checks are refused unchecked for a
// while, answered ERR ACCESS-DENIED as a wrong password is (internal/netlimit).
package nut
