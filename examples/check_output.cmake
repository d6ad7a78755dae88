# Runs PROGRAM and checks that its output matches every regular expression in EXPECT
# (one per line; blank lines and lines starting with '#' are skipped). An optional LAUNCHER runs
# it (e.g. mpiexec and its arguments, separated by '|').
string(REPLACE "|" ";" launcher "${LAUNCHER}")
execute_process(COMMAND ${launcher} ${PROGRAM} RESULT_VARIABLE rc OUTPUT_VARIABLE out
                ERROR_VARIABLE err)
message("${out}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${PROGRAM} exited with ${rc}\n${err}")
endif()
file(STRINGS ${EXPECT} patterns ENCODING UTF-8)
set(missing 0)
foreach(pattern IN LISTS patterns)
  if(pattern STREQUAL "" OR pattern MATCHES "^#")
    continue()
  endif()
  if(NOT out MATCHES "${pattern}")
    message("expected output matching: ${pattern}")
    math(EXPR missing "${missing} + 1")
  endif()
endforeach()
if(missing GREATER 0)
  message(FATAL_ERROR "${missing} expected line(s) missing from the output of ${PROGRAM}")
endif()
