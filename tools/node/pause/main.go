// pause: the sandbox image's only program. It holds the pod's namespaces open and, as PID 1 of a
// pod with shareProcessNamespace, reaps the orphans of every container (the monitor treats a
// zombie as gone, so an unreaped workload would look alive to nobody but the kernel's tables).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range signals {
		if s != syscall.SIGCHLD {
			return
		}
		for {
			var status syscall.WaitStatus
			if pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}
