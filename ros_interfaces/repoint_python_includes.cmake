# The rosidl wheels' exported `<pkg>__rosidl_generator_py` targets carry the include paths of the
# wheel-build host (/opt/python/cp311-cp311/...). CMake rejects non-existent include paths of
# imported targets, so point them at this interpreter's Python and NumPy headers instead of
# editing the installed files. Call after every find_package() of a message package.
function(gnesf_repoint_python_includes)
  find_package(Python3 REQUIRED COMPONENTS Interpreter Development.Module NumPy)
  get_directory_property(_imported IMPORTED_TARGETS)
  foreach(_t IN LISTS _imported)
    if(_t MATCHES "__rosidl_generator_py$")
      set_target_properties(${_t} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES
        "${Python3_INCLUDE_DIRS};${Python3_NumPy_INCLUDE_DIRS}")
    endif()
  endforeach()
endfunction()
