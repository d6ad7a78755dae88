# Compiles a public header of emb on its own (included twice, to catch a missing guard) with
# each available compiler in C++17 and C++20, with -Werror and the strict warning set.
# Run by CTest, one test per header, as:
#   cmake -DEMB_INCLUDE_DIR=... -DEIGEN_INCLUDE_DIR=... -DWORK_DIR=... -DHEADER=emb/x.hpp -P this
# Without HEADER it checks every header under EMB_INCLUDE_DIR/emb. EXTRA_INCLUDE_DIRS adds
# system include directories (an optional dependency's).
cmake_minimum_required(VERSION 3.14)

set(compilers ${COMPILERS})
foreach(name g++ clang++)
  find_program(found_${name} ${name})
  if(found_${name})
    list(APPEND compilers ${found_${name}})
  endif()
endforeach()
# c++ is often a link to g++: compare the real files.
set(resolved "")
foreach(compiler IN LISTS compilers)
  get_filename_component(real ${compiler} REALPATH)
  list(APPEND resolved ${real})
endforeach()
set(compilers ${resolved})
list(REMOVE_DUPLICATES compilers)

set(flags -fsyntax-only -Wall -Wextra -Wshadow -Wconversion -Wsign-conversion -pedantic -Werror
          -I${EMB_INCLUDE_DIR})
foreach(dir IN LISTS EIGEN_INCLUDE_DIR EXTRA_INCLUDE_DIRS)
  list(APPEND flags -isystem ${dir})
endforeach()

if(DEFINED HEADER)
  set(headers ${HEADER})
else()
  file(GLOB_RECURSE headers RELATIVE ${EMB_INCLUDE_DIR} ${EMB_INCLUDE_DIR}/emb/*.hpp)
  list(SORT headers)
endif()
file(MAKE_DIRECTORY ${WORK_DIR})
set(failures 0)
set(checked 0)
foreach(header IN LISTS headers)
  string(MAKE_C_IDENTIFIER ${header} stem)
  set(tu ${WORK_DIR}/${stem}.cpp)
  file(WRITE ${tu} "#include <${header}>\n#include <${header}>\nint main() { return 0; }\n")
  foreach(compiler IN LISTS compilers)
    foreach(std 17 20)
      execute_process(COMMAND ${compiler} -std=c++${std} ${flags} ${tu}
                      RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
      math(EXPR checked "${checked} + 1")
      if(NOT rc EQUAL 0)
        math(EXPR failures "${failures} + 1")
        message("FAILED: ${header} with ${compiler} -std=c++${std}\n${out}")
      endif()
    endforeach()
  endforeach()
endforeach()
list(LENGTH headers count)
message("checked ${count} headers with [${compilers}] in C++17 and C++20: ${checked} compiles, ${failures} failed")
if(failures GREATER 0)
  message(FATAL_ERROR "${failures} header compile(s) failed")
endif()
