/* Symbol visibility for the shared library. */
#ifndef BACKPROP_EXPORT_H
#define BACKPROP_EXPORT_H

#if defined(_WIN32)
#define BP_API
#elif defined(__GNUC__)
#define BP_API __attribute__((visibility("default")))
#else
#define BP_API
#endif

#endif
