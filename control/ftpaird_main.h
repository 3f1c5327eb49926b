// The daemon's entry point, shared by ftpaird (main.cc) and ftpaird-prev (main_prev.cc): the
// two executables differ only in what they set before calling it, so the large command-line
// source is compiled once.
#pragma once

namespace ftpair {

// Parses the command line, runs the daemon until a signal ends it; the process's exit status.
int ftpaird_main(int argc, char **argv);

}  // namespace ftpair
