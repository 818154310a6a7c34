# vzdump for plain QEMU — build, test, install.
#
#   make                  build every tool into $(BUILD)/bin
#   make check            run the whole test suite (installs missing packages first)
#   make check SANITIZE=1 the same, built with AddressSanitizer and UBSan
#   make check TESTS="tests/a.bats ..."   only those test files
#   make demo             back up a throw-away running VM with vzdump.sh, restore it, show it
#   make demo GUEST=1     the same with the booted test guest and a real filesystem freeze (then qmrestore.sh as VM 200, booted)
#   make bench            run the benchmarks in bench/
#   make lint             man pages (mandoc), shell scripts (shellcheck), C files (.clang-format)
#   make format           reformat the C files in place (build-aux/format)
#   make install          PREFIX, DESTDIR, BINDIR, MANDIR, LIBDIR, COMPLETIONDIR as usual
#   make deb              the Debian package (debian/), built in a copy of the tree under
#                         build/deb, where it is left; lintian must report no error or warning
#   make fuzz             build the libFuzzer targets fuzz/fuzz_*.c (clang) and run each for
#                         FUZZ_SECONDS (60); make fuzz-smoke: 10 s each; make fuzz-build: only
#                         build them. fuzz/README.md
#   CFLAGS, CPPFLAGS, LDFLAGS, LDLIBS (e.g. from dpkg-buildflags) add to the project's own flags

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
# vzdump.sh's library folder is LIBDIR/vzdump (install writes it into the installed script).
LIBDIR ?= $(PREFIX)/lib
# bash-completion loads COMPLETIONDIR/COMMAND on first use: the one file
# dist/completion/vzdump-qemu.bash goes there as vzdump-qemu, linked under every command's name.
COMPLETIONDIR ?= $(PREFIX)/share/bash-completion/completions
CC ?= cc
PKG_CONFIG ?= pkg-config
SANITIZE ?= 0

# Every folder holding C sources, other than these, is one tool of the same name.
NOT_TOOLS := common tests bench build man fuzz
TOOLS := $(filter-out $(NOT_TOOLS),$(patsubst %/,%,$(sort $(dir $(wildcard */*.c)))))
SCRIPTS := vzdump.sh qmrestore.sh
# The commands dist/completion/vzdump-qemu.bash completes (install links it under each name).
COMPLETED := $(TOOLS) $(SCRIPTS)

# Separate object trees per compiler and sanitizer setting, so switching never mixes them.
BUILD ?= build/$(notdir $(CC))$(if $(filter 1,$(SANITIZE)),-san)

LIBS_PKG := jansson libzstd liblzma libnbd libmd uuid zlib libedit

# CFLAGS, CPPFLAGS and LDFLAGS belong to the user (make CFLAGS=-O1, dpkg-buildflags): the
# flags the project needs live in VZ_* and are always added before them, the way automake's
# AM_CFLAGS are.
CFLAGS ?= -O2 -g
VZ_CPPFLAGS := -D_GNU_SOURCE -Icommon
VZ_CFLAGS := -std=c11 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
	-Wmissing-prototypes -Wno-unused-parameter -MMD -MP
VZ_LDFLAGS :=
SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
ifeq ($(SANITIZE),1)
VZ_CFLAGS += $(SANFLAGS) -O1
VZ_LDFLAGS += $(SANFLAGS)
endif

# pkg-config runs once, when the first compile or link needs it (so clean, deps and lint work
# without the libraries); when it fails, its message stays visible and the build stops.
pkg_config = $(call pkg_config_ok,$(shell $(PKG_CONFIG) $(1) $(LIBS_PKG) && echo pkg-config-ok),$(1))
pkg_config_ok = $(if $(filter pkg-config-ok,$(1)),$(filter-out pkg-config-ok,$(1)),$(error $(PKG_CONFIG) $(2) $(LIBS_PKG) failed))
PKG_CFLAGS = $(eval PKG_CFLAGS := $$(call pkg_config,--cflags))$(PKG_CFLAGS)
PKG_LIBS = $(eval PKG_LIBS := $$(call pkg_config,--libs))$(PKG_LIBS)
VZ_LDLIBS = -Wl,--as-needed $(PKG_LIBS) -lpthread

COMMON_SRC := $(wildcard common/*.c)
COMMON_OBJ := $(COMMON_SRC:%.c=$(BUILD)/obj/%.o)
COMMON_LIB := $(BUILD)/libcommon.a
BINS := $(TOOLS:%=$(BUILD)/bin/%)

.PHONY: all clean check demo bench deps install lint format fuzz fuzz-build fuzz-smoke deb
all: $(BINS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(VZ_CPPFLAGS) $(CPPFLAGS) $(VZ_CFLAGS) $(PKG_CFLAGS) $(CFLAGS) -c -o $@ $<

$(COMMON_LIB): $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && $(AR) rcs $@ $^

define tool_rule
$(BUILD)/bin/$(1): $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard $(1)/*.c)) $(COMMON_LIB)
	@mkdir -p $$(dir $$@)
	$$(CC) $$(VZ_LDFLAGS) $$(CFLAGS) $$(LDFLAGS) -o $$@ $$^ $$(VZ_LDLIBS) $$(LDLIBS)
endef
$(foreach t,$(TOOLS),$(eval $(call tool_rule,$(t))))

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# Fuzzing (fuzz/README.md): every fuzz/fuzz_NAME.c is linked with the files its first line names
# ("/* fuzz-sources: a/b.c ... */"), all of common/ and the libraries, into
# build/fuzz/bin/fuzz_NAME; all of it built by clang with libFuzzer and the sanitizers, in the
# fuzzing mode that skips the checksums a fuzzer cannot forge.
FUZZ_CC ?= clang
FUZZ_BUILD := build/fuzz
FUZZ_SECONDS ?= 60
FUZZ_FLAGS := -fsanitize=fuzzer $(SANFLAGS) -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION -O1
FUZZ_TARGETS := $(patsubst fuzz/fuzz_%.c,%,$(wildcard fuzz/fuzz_*.c))
FUZZ_BINS := $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/bin/fuzz_%)
FUZZ_COMMON_LIB := $(FUZZ_BUILD)/libcommon.a
fuzz_sources = $(shell sed -n '1s|^/\* *fuzz-sources:\(.*\)\*/ *$$|\1|p' fuzz/fuzz_$(1).c)

$(FUZZ_BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(VZ_CPPFLAGS) $(CPPFLAGS) $(VZ_CFLAGS) $(PKG_CFLAGS) $(CFLAGS) $(FUZZ_FLAGS) \
		$(if $(filter fuzz/%,$<),-include fuzz/fuzz.h $(FUZZ_INCLUDES)) -c -o $@ $<

$(FUZZ_COMMON_LIB): $(COMMON_SRC:%.c=$(FUZZ_BUILD)/obj/%.o)
	rm -f $@ && $(AR) rcs $@ $^

# A target includes its tool's headers as the tool does ("reader.h"): -I each folder it links.
define fuzz_rule
$(FUZZ_BUILD)/obj/fuzz/fuzz_$(1).o: \
	FUZZ_INCLUDES := $(patsubst %/,-I%,$(sort $(dir $(call fuzz_sources,$(1)))))
$(FUZZ_BUILD)/bin/fuzz_$(1): $(FUZZ_BUILD)/obj/fuzz/fuzz_$(1).o \
		$(patsubst %.c,$(FUZZ_BUILD)/obj/%.o,$(call fuzz_sources,$(1))) $(FUZZ_COMMON_LIB)
	@mkdir -p $$(dir $$@)
	$$(FUZZ_CC) $$(VZ_LDFLAGS) $$(CFLAGS) $$(FUZZ_FLAGS) $$(LDFLAGS) -o $$@ $$^ $$(VZ_LDLIBS) \
		$$(LDLIBS)
endef
$(foreach t,$(FUZZ_TARGETS),$(eval $(call fuzz_rule,$(t))))

-include $(shell find $(FUZZ_BUILD)/obj -name '*.d' 2>/dev/null)

deps:
	build-aux/deps

# check and demo install what is missing first, then build, then run.
check:
	@build-aux/deps --check 2>/dev/null || build-aux/deps
	$(MAKE) all
	VZ_BIN=$(abspath $(BUILD)/bin) SANITIZE=$(SANITIZE) tests/run $(TESTS)

demo:
	@build-aux/deps --check 2>/dev/null || build-aux/deps
	$(MAKE) all
	VZ_BIN=$(abspath $(BUILD)/bin) tests/demo.sh

bench:
	@build-aux/deps --check 2>/dev/null || build-aux/deps
	$(MAKE) all
	VZ_BIN=$(abspath $(BUILD)/bin) bench/run

lint:
	mandoc -Tlint -Wwarning man/*.1
	shellcheck -x build-aux/deps build-aux/format tests/run tests/demo.sh bench/run .ci/run debian/vzdump-qemu.prerm $(wildcard $(SCRIPTS)) $(wildcard lib/vzdump/*.bash tests/lib/*.bash tests/lib/*.sh bench/*.sh bench/lib/*.bash fuzz/run fuzz/seeds/*.sh dist/completion/*.bash)
	build-aux/format --check

format:
	build-aux/format

fuzz-build: $(FUZZ_BINS)

# The seed scripts fuzz/seeds/NAME.sh use the tools, built as by `make all`.
fuzz:
	@build-aux/deps --check 2>/dev/null || build-aux/deps
	$(MAKE) all fuzz-build
	VZ_BIN=$(abspath $(BUILD)/bin) FUZZ_BUILD=$(abspath $(FUZZ_BUILD)) \
		FUZZ_SECONDS=$(FUZZ_SECONDS) fuzz/run $(FUZZ_TARGETS)

fuzz-smoke:
	$(MAKE) fuzz FUZZ_SECONDS=10

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1
	install -m 0755 $(BINS) $(DESTDIR)$(BINDIR)
	install -d $(DESTDIR)$(LIBDIR)/vzdump
	install -m 0644 $(wildcard lib/vzdump/*) $(DESTDIR)$(LIBDIR)/vzdump
	for s in $(SCRIPTS); do \
		sed 's|^INSTALLED_LIBDIR=$$|INSTALLED_LIBDIR=$(LIBDIR)/vzdump|' $$s >$(DESTDIR)$(BINDIR)/$$s && \
		chmod 0755 $(DESTDIR)$(BINDIR)/$$s || exit 1; \
	done
	install -m 0644 $(wildcard man/*.1) $(DESTDIR)$(MANDIR)/man1
	install -d $(DESTDIR)$(COMPLETIONDIR)
	install -m 0644 dist/completion/vzdump-qemu.bash $(DESTDIR)$(COMPLETIONDIR)/vzdump-qemu
	for c in $(COMPLETED); do ln -sfn vzdump-qemu $(DESTDIR)$(COMPLETIONDIR)/$$c || exit 1; done

# dpkg-buildpackage builds in the tree it is given and writes the package beside that tree: it
# is given a copy of this one, without build/ and .git, in build/deb/src, so that the package
# lands in build/deb.
DEB_DIR := build/deb
deb:
	@build-aux/deps --check 2>/dev/null || build-aux/deps
	rm -rf $(DEB_DIR)
	mkdir -p $(DEB_DIR)/src
	tar -c --exclude=./build --exclude=./.git -f - . | tar -x -C $(DEB_DIR)/src -f -
	cd $(DEB_DIR)/src && dpkg-buildpackage -us -uc -b
	lintian --fail-on error,warning --display-info $(DEB_DIR)/*.changes

clean:
	rm -rf build
