# Runs fasttext_predict (PROGRAM) on MODEL and INPUT reading 1 MiB and then 7 bytes at a time,
# and requires the same output: lines split across reads must not change a prediction.
foreach(block 1048576 7)
  execute_process(COMMAND ${PROGRAM} --block ${block} ${MODEL} ${INPUT} -1
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out_${block} ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${PROGRAM} --block ${block} exited with ${rc}\n${err}")
  endif()
endforeach()
if(NOT out_1048576 STREQUAL out_7)
  message(FATAL_ERROR "the output depends on the read size:\n${out_1048576}\n---\n${out_7}")
endif()
string(LENGTH "${out_7}" length)
message("same ${length} bytes of output with either read size")
