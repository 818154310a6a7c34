/* Exit statuses, the same for every tool (README, each man page's EXIT STATUS): a script can
 * tell "you called it wrong" from "it failed" from "the peer was not there". */
#ifndef VZ_EXITCODE_H
#define VZ_EXITCODE_H

enum exit_status {
	EXIT_OK = 0,
	EXIT_FAIL = 1,  /* the operation failed, or the peer refused it */
	EXIT_USAGE = 2, /* a bad command line; nothing was done */
	EXIT_PEER = 3,  /* the peer (QEMU, the guest agent, an NBD server) could not be reached,
			 * did not answer in time, or dropped the connection */
	EXIT_TOOL_SPECIFIC = 4, /* a tool's own statuses start here (gafreeze.h) */
};

#endif
