# HSMCA_CHECK_CFLAG(FLAG, [ACTION-IF-OK], [ACTION-IF-NOT])
# Probes FLAG with -Werror so that a flag the compiler merely warns about
# is not added (clang accepts unknown -W flags with a warning).
AC_DEFUN([HSMCA_CHECK_CFLAG], [
  AS_VAR_PUSHDEF([cache], [hsmca_cv_cflag_$1])
  AC_CACHE_CHECK([whether $CC accepts $1], [cache], [
    save_CFLAGS=$CFLAGS
    CFLAGS="$CFLAGS -Werror $1"
    AC_COMPILE_IFELSE([AC_LANG_PROGRAM([], [return 0;])],
      [AS_VAR_SET([cache], [yes])], [AS_VAR_SET([cache], [no])])
    CFLAGS=$save_CFLAGS])
  AS_VAR_IF([cache], [yes], [$2], [$3])
  AS_VAR_POPDEF([cache])])

# HSMCA_CHECK_LDFLAG(FLAG, [ACTION-IF-OK], [ACTION-IF-NOT])
AC_DEFUN([HSMCA_CHECK_LDFLAG], [
  AS_VAR_PUSHDEF([cache], [hsmca_cv_ldflag_$1])
  AC_CACHE_CHECK([whether the linker accepts $1], [cache], [
    save_LDFLAGS=$LDFLAGS
    LDFLAGS="$LDFLAGS -Werror $1"
    AC_LINK_IFELSE([AC_LANG_PROGRAM([], [return 0;])],
      [AS_VAR_SET([cache], [yes])], [AS_VAR_SET([cache], [no])])
    LDFLAGS=$save_LDFLAGS])
  AS_VAR_IF([cache], [yes], [$2], [$3])
  AS_VAR_POPDEF([cache])])

# AX_PTHREAD_SIMPLE: glibc has pthreads in libc, but -pthread is still the
# portable spelling.
AC_DEFUN([AX_PTHREAD_SIMPLE], [
  HSMCA_CHECK_LDFLAG([-pthread], [PTHREAD_CFLAGS=-pthread; PTHREAD_LIBS=-pthread],
    [AC_MSG_ERROR([-pthread not supported])])
  AC_SUBST([PTHREAD_CFLAGS])
  AC_SUBST([PTHREAD_LIBS])])
