# MTCP_SANITIZE=ON: address + undefined sanitizers on every target, no recovery from UB.
if(MTCP_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()
