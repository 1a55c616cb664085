// Go's contender in benches/echo.py: the plain Go echo server, a goroutine
// per connection on the runtime's netpoller, GOMAXPROCS at Go's default.
//
//	echo_server [-host H] [-port P]
//
// Prints "listening on HOST:PORT" once it accepts (-port 0 picks a free
// port), serves until SIGINT or SIGTERM, and exits 0. TCP_NODELAY is Go's
// default on TCP connections.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

func serve(c net.Conn) {
	defer c.Close()
	// A read/write loop rather than io.Copy: io.Copy(c, c) would take
	// TCPConn.ReadFrom's splice path, which the Python servers have no
	// counterpart to; this does the same recv and send per message as they.
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func main() {
	host := flag.String("host", "127.0.0.1", "address to listen on")
	port := flag.Int("port", 0, "port to listen on (0 picks a free one)")
	flag.Parse()
	ln, err := net.Listen("tcp", net.JoinHostPort(*host, strconv.Itoa(*port)))
	if err != nil {
		fmt.Fprintln(os.Stderr, "echo_server:", err)
		os.Exit(1)
	}
	// os.Stdout is unbuffered: the line is out when Printf returns.
	fmt.Printf("listening on %s:%d\n", *host, ln.Addr().(*net.TCPAddr).Port)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				// Out of fds, say: wait a little and accept again.
				time.Sleep(10 * time.Millisecond)
				continue
			}
			go serve(c)
		}
	}()
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
	os.Exit(0)
}
