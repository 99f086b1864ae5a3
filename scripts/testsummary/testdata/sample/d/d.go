// Package d has no tests.
package d
