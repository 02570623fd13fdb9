// The C API: exercised from C (capi_from_c.c) and its error contract checked from C++.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "edgeprune/edgeprune.h"

extern "C" int ep_capi_c_check(char* msg, int len);

TEST(CApi, UsableFromC) {
  char msg[256] = "";
  EXPECT_EQ(ep_capi_c_check(msg, sizeof msg), 0) << msg;
}

TEST(CApi, ErrorsAreStatusesWithMessages) {
  const float w[4] = {1, 0, 0, 1};
  ep_linear* l = nullptr;
  EXPECT_EQ(
      ep_linear_create(w, 2, 2, nullptr, static_cast<ep_activation>(9), 0, EP_KERNEL_AUTO, &l),
      EP_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ep_last_error()).find("activation"), std::string::npos);
  EXPECT_EQ(ep_linear_create(w, 0, 2, nullptr, EP_ACT_NONE, 0, EP_KERNEL_AUTO, &l),
            EP_INVALID_ARGUMENT);
  EXPECT_EQ(ep_linear_create(w, 2, 2, nullptr, EP_ACT_NONE, 0, EP_KERNEL_AUTO, nullptr),
            EP_INVALID_ARGUMENT);
  ASSERT_EQ(ep_linear_create(w, 2, 2, nullptr, EP_ACT_NONE, 0, EP_KERNEL_AUTO, &l), EP_OK);
  EXPECT_STREQ(ep_last_error(), "");
  float x[2] = {3, 4}, y[2] = {0, 0};
  EXPECT_EQ(ep_linear_run(l, x, 1, y, 0), EP_INVALID_ARGUMENT);
  EXPECT_EQ(ep_linear_run(l, nullptr, 1, y, 1), EP_INVALID_ARGUMENT);
  EXPECT_EQ(ep_linear_run(l, x, -1, y, 1), EP_INVALID_ARGUMENT);
  ASSERT_EQ(ep_linear_run_kn(l, x, 1, y, 1), EP_OK);
  EXPECT_EQ(y[0], 3.0f);
  EXPECT_EQ(y[1], 4.0f);
  ep_linear_destroy(l);
  ep_linear_destroy(nullptr);  // like free(NULL)
  ep_qlinear_destroy(nullptr);
}
