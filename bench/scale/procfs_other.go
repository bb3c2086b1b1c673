//go:build !linux

package main

import (
	"errors"
	"syscall"
)

// The benchmark measures processes through Linux's /proc; elsewhere it
// builds, and refuses to measure.
var errNoProcfs = errors.New("measuring a process needs Linux's /proc")

func procAttr() *syscall.SysProcAttr         { return nil }
func cpuSeconds(int) (float64, error)        { return 0, errNoProcfs }
func statusBytes(int, string) (int64, error) { return 0, errNoProcfs }
func rss(int) (int64, error)                 { return 0, errNoProcfs }
func openFiles(int) (int, error)             { return 0, errNoProcfs }
func openFileLimit() uint64                  { return 0 }
func kernel() string                         { return "" }
func loadAvg() string                        { return "" }
func memTotal() int64                        { return 0 }
